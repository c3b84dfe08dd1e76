//! [`SlotCheckouts`]: the slots of [`slot`](crate::slot) as the core
//! [`Checkouts`] interface, for an executor that runs its jobs elsewhere (a
//! Slurm cluster) on a directory this process shares with them.
//!
//! The same guarantees as the local executor's slots: each run's checkout
//! is a private repository sharing the user's objects, made exactly the
//! job's commit before every job, and the candidate is the checkout's tree
//! committed by the controller through the user's git dir. The nodes must
//! see the user's object store at the same path (the slot's
//! `objects/info/alternates` names it).

use crate::slot::{self, RepoDirs};
use autoresearch_core::exec::Job;
use autoresearch_core::jobs::{Candidate, CheckoutError, Checkouts};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Slots under one directory (`{root}/slot-{host}-{pid}-{n}`), one per run
/// in flight. [`Checkouts::close`] removes this process's idle slots and
/// those of dead controllers of this host.
pub struct SlotCheckouts {
    root: PathBuf,
    held: Mutex<HashMap<String, PathBuf>>,
    idle: Mutex<Vec<PathBuf>>,
    repos: Mutex<HashMap<String, RepoDirs>>,
    next: AtomicUsize,
}

impl SlotCheckouts {
    /// Slots under `root`, created on first use.
    pub fn new(root: impl Into<PathBuf>) -> SlotCheckouts {
        SlotCheckouts {
            root: root.into(),
            held: Mutex::new(HashMap::new()),
            idle: Mutex::new(Vec::new()),
            repos: Mutex::new(HashMap::new()),
            next: AtomicUsize::new(0),
        }
    }

    fn repo(&self, job: &Job) -> Result<RepoDirs, CheckoutError> {
        if let Some(d) = self
            .repos
            .lock()
            .ok()
            .and_then(|m| m.get(&job.repo).cloned())
        {
            return Ok(d);
        }
        let d = RepoDirs::of(Path::new(&job.repo)).map_err(|e| CheckoutError {
            doing: "reading the repository's directories".into(),
            checkout: PathBuf::from(&job.repo),
            reason: e.to_string(),
        })?;
        if let Ok(mut m) = self.repos.lock() {
            m.insert(job.repo.clone(), d.clone());
        }
        Ok(d)
    }

    fn slot_of(&self, run_id: &str) -> PathBuf {
        if let Some(p) = self.held.lock().ok().and_then(|m| m.get(run_id).cloned()) {
            return p;
        }
        let p = self
            .idle
            .lock()
            .ok()
            .and_then(|mut i| i.pop())
            .unwrap_or_else(|| {
                let n = self.next.fetch_add(1, Ordering::Relaxed);
                self.root
                    .join(format!("slot-{}-{}-{n}", host(), std::process::id()))
            });
        if let Ok(mut m) = self.held.lock() {
            m.insert(run_id.to_string(), p.clone());
        }
        p
    }
}

/// This host's name, as slot names carry it (`-` and other characters
/// but letters, digits and `.` become `_`).
fn host() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    name.trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Checkouts for SlotCheckouts {
    fn root(&self) -> PathBuf {
        self.root.clone()
    }

    fn prepare(&self, job: &Job) -> Result<PathBuf, CheckoutError> {
        let repo = self.repo(job)?;
        let path = self.slot_of(&job.run_id);
        let failed = |reason: String| CheckoutError {
            doing: format!("checking out {}", job.commit),
            checkout: path.clone(),
            reason,
        };
        slot::prepare(&repo, &path, &job.commit).map_err(failed)?;
        if !path.join(&job.workdir).is_dir() {
            return Err(failed(format!(
                "{} is not a directory of {}",
                job.workdir, job.commit
            )));
        }
        Ok(path)
    }

    fn candidate(
        &self,
        job: &Job,
        checkout: &Path,
        stdout: &str,
    ) -> Result<Candidate, CheckoutError> {
        let repo = self.repo(job)?;
        let produced =
            slot::produce(&repo, checkout, &job.commit, &job.run_id, stdout).map_err(|reason| {
                CheckoutError {
                    doing: "building the candidate".into(),
                    checkout: checkout.to_path_buf(),
                    reason,
                }
            })?;
        Ok(Candidate {
            commit: produced.commit,
            changed_paths: produced.changed,
            left_out: produced.left_out,
        })
    }

    fn release(&self, run_id: &str) {
        let slot = self.held.lock().ok().and_then(|mut m| m.remove(run_id));
        if let (Some(slot), Ok(mut idle)) = (slot, self.idle.lock()) {
            idle.push(slot);
        }
    }

    fn close(&self) -> Result<(), CheckoutError> {
        let mut gone: Vec<PathBuf> = self
            .idle
            .lock()
            .map(|mut i| i.drain(..).collect())
            .unwrap_or_default();
        // Slots of controllers on this host that died (the workdir may be
        // shared with other hosts: theirs stay).
        let held: Vec<PathBuf> = self
            .held
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        let me = std::process::id();
        let prefix = format!("slot-{}-", host());
        for e in std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix(&prefix)
                .and_then(|r| r.split('-').next())
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            let path = e.path();
            let alive = pid == me || Path::new(&format!("/proc/{pid}")).exists();
            if !alive && path.is_dir() && !held.contains(&path) && !gone.contains(&path) {
                gone.push(path);
            }
        }
        for slot in gone {
            let mut index = slot.clone().into_os_string();
            index.push(".index");
            let _ = std::fs::remove_file(PathBuf::from(index));
            std::fs::remove_dir_all(&slot).map_err(|e| CheckoutError {
                doing: "removing a checkout".into(),
                checkout: slot.clone(),
                reason: e.to_string(),
            })?;
        }
        Ok(())
    }
}
