//! [`LocalExecutor`]: runs jobs as child processes in git worktrees of a
//! local repository.
//!
//! - Checkout: a pool of worktrees at `{state}/worktrees/slot-{pid}-{n}`,
//!   detached at the job's commit; a run takes a slot (checked out afresh and
//!   cleaned of untracked files) and its jobs share it until `release` puts
//!   it back. [`Executor::close`] removes the slots, and those of controllers
//!   that died.
//! - Process: `sh -c COMMAND` in its own process group. On timeout the group
//!   gets SIGTERM, then SIGKILL after the grace period; after every job (and
//!   when the job's future is dropped) the group gets SIGKILL, so no
//!   grandchild outlives its job, even one that ignores SIGTERM.
//! - Output: stdout and stderr go straight to files under
//!   `{state}/runs/{run_id}/`; only their tails are read back into memory.

use crate::git::{Git, IDENTITY, IndexStamp};
use async_trait::async_trait;
use autoresearch_core::exec::{ExecError, Executor, ExitStatus, Job, JobReport, OutputSource};
use autoresearch_core::metrics::MetricReader;
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Runs jobs locally. `state_dir` is the controller's directory (usually
/// `{repo}/.autoresearch`), excluded from git by the loop.
pub struct LocalExecutor {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Pool {
    idle: Vec<(PathBuf, String)>,
    resetting: usize,
    /// Slots this executor made that still exist (held, idle or resetting).
    slots: usize,
}

struct Inner {
    state_dir: PathBuf,
    /// Each run's slot and what it has checked out, to skip redundant checkouts.
    checkouts: Mutex<HashMap<String, (PathBuf, String)>>,
    /// Slots no run holds, each clean at the commit it holds, and how many
    /// released slots are still being reset. Taking a slot while all are
    /// held or resetting makes a new one as long as there are fewer than two
    /// per run holding one (so a run need not wait for the reset of the slot
    /// its predecessor just released); beyond that it waits for a reset.
    pool: Mutex<Pool>,
    pool_changed: std::sync::Condvar,
    /// The commit each run's slot was first checked out at (its base).
    bases: Mutex<HashMap<String, String>>,
    /// Slots being reset in the background after a release.
    resets: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    next_slot: std::sync::atomic::AtomicUsize,
}

impl LocalExecutor {
    pub fn new(state_dir: impl Into<PathBuf>) -> LocalExecutor {
        LocalExecutor {
            inner: Arc::new(Inner {
                state_dir: state_dir.into(),
                checkouts: Mutex::new(HashMap::new()),
                pool: Mutex::new(Pool::default()),
                pool_changed: std::sync::Condvar::new(),
                bases: Mutex::new(HashMap::new()),
                resets: Mutex::new(Vec::new()),
                next_slot: std::sync::atomic::AtomicUsize::new(0),
            }),
        }
    }

    /// Where the worktree `run_id` holds lives, if it holds one.
    pub fn worktree_path(&self, run_id: &str) -> Option<PathBuf> {
        self.inner.known_checkout(run_id).map(|(p, _)| p)
    }

    /// Where the logs of `run_id` go.
    pub fn log_dir(&self, run_id: &str) -> PathBuf {
        self.inner.log_dir(run_id)
    }
}

impl Inner {
    fn worktrees(&self) -> PathBuf {
        self.state_dir.join("worktrees")
    }

    fn new_slot(&self) -> PathBuf {
        let n = self
            .next_slot
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.worktrees()
            .join(format!("slot-{}-{n}", std::process::id()))
    }

    /// Where the logs of `run_id` go.
    pub fn log_dir(&self, run_id: &str) -> PathBuf {
        self.state_dir.join("runs").join(run_id)
    }

    fn error(&self, job_run: &str, doing: &str, reason: impl std::fmt::Display) -> ExecError {
        ExecError {
            executor: "local".into(),
            run_id: job_run.to_string(),
            doing: doing.to_string(),
            reason: reason.to_string(),
        }
    }

    fn known_checkout(&self, run_id: &str) -> Option<(PathBuf, String)> {
        self.checkouts
            .lock()
            .ok()
            .and_then(|m| m.get(run_id).cloned())
    }

    fn remember(&self, run_id: &str, path: &Path, commit: &str) {
        if let Ok(mut m) = self.checkouts.lock() {
            m.insert(run_id.to_string(), (path.to_path_buf(), commit.to_string()));
        }
    }

    fn forget(&self, run_id: &str) {
        if let Ok(mut m) = self.checkouts.lock() {
            m.remove(run_id);
        }
    }

    /// Makes the run's slot hold `commit`, taking a slot if the run has
    /// none. Blocking.
    fn checkout(&self, job: &Job) -> Result<PathBuf, String> {
        if let Some((p, c)) = self.known_checkout(&job.run_id) {
            if c != job.commit {
                Git::new(&p)
                    .run(&["checkout", "--quiet", "--detach", "-f", &job.commit])
                    .map_err(|e| e.to_string())?;
                self.remember(&job.run_id, &p, &job.commit);
            }
            return Ok(p);
        }
        if let Ok(mut b) = self.bases.lock() {
            b.insert(job.run_id.clone(), job.commit.clone());
        }
        // Prefer a slot that already holds the commit (the usual case: the
        // head did not move since the slot's last run).
        let held = self.checkouts.lock().map(|m| m.len()).unwrap_or(0);
        let idle = self.pool.lock().ok().and_then(|mut p| {
            while p.idle.is_empty() && p.resetting > 0 && p.slots >= 2 * (held + 1) {
                match self
                    .pool_changed
                    .wait_timeout(p, std::time::Duration::from_secs(10))
                {
                    Ok((guard, t)) if !t.timed_out() => p = guard,
                    Ok((guard, _)) => {
                        p = guard;
                        break;
                    }
                    Err(_) => return None,
                }
            }
            let i = p.idle.iter().position(|(_, c)| *c == job.commit);
            i.or(p.idle.len().checked_sub(1))
                .map(|i| p.idle.swap_remove(i))
        });
        let Some((path, held)) = idle else {
            return self.add_slot(job, self.new_slot());
        };
        if held != job.commit {
            let fresh =
                Git::new(&path).run(&["checkout", "--quiet", "--detach", "-f", &job.commit]);
            if let Err(e) = fresh {
                // A damaged slot: drop it and start a new one.
                let _ = self.admin(|| Git::new(&job.repo).worktree_remove(&path));
                self.slot_gone();
                tracing::warn!("worktree {} was unusable ({e}); replaced", path.display());
                return self.add_slot(job, self.new_slot());
            }
        }
        self.remember(&job.run_id, &path, &job.commit);
        Ok(path)
    }

    /// Puts a slot back at `commit`, without untracked files. Blocking.
    fn reset_slot(&self, path: &Path, commit: &str) {
        let g = Git::new(path);
        let ok = g
            .run(&["checkout", "--quiet", "--detach", "-f", commit])
            .and_then(|_| g.run(&["clean", "-q", "-f", "-d", "-x"]));
        if let Err(e) = &ok {
            tracing::warn!("resetting worktree {}: {e}; dropping it", path.display());
            if let Ok(dir) = g.common_dir() {
                let _ = self.admin(|| Git::new(dir).worktree_remove(path));
            }
        }
        if let Ok(mut p) = self.pool.lock() {
            p.resetting = p.resetting.saturating_sub(1);
            if ok.is_ok() {
                p.idle.push((path.to_path_buf(), commit.to_string()));
            } else {
                p.slots = p.slots.saturating_sub(1);
            }
        }
        self.pool_changed.notify_all();
    }

    fn add_slot(&self, job: &Job, path: PathBuf) -> Result<PathBuf, String> {
        if path.exists() {
            let _ = std::fs::remove_dir_all(&path);
        }
        self.admin(|| Git::new(&job.repo).worktree_add(&path, &job.commit))
            .map_err(|e| e.to_string())?;
        if let Ok(mut p) = self.pool.lock() {
            p.slots += 1;
        }
        self.remember(&job.run_id, &path, &job.commit);
        Ok(path)
    }

    /// Runs `f` (a `git worktree` add, remove or prune) holding an exclusive
    /// lock on `{state}/worktrees/.admin.lock`. Git does not make these
    /// safe against each other: an add that scans the existing worktrees
    /// fails on one that another add is half-way through creating, and a
    /// prune can delete it. The lock is an `flock`, so it also holds
    /// between controllers in different processes sharing the state
    /// directory; without a lock file (unwritable directory) `f` runs
    /// unlocked.
    fn admin<T>(&self, f: impl FnOnce() -> T) -> T {
        let _ = std::fs::create_dir_all(self.worktrees());
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.worktrees().join(".admin.lock"));
        let Ok(file) = file else {
            return f();
        };
        // Unlocked on drop, with the file.
        let _ = file.lock();
        let out = f();
        drop(file);
        out
    }

    fn slot_gone(&self) {
        if let Ok(mut p) = self.pool.lock() {
            p.slots = p.slots.saturating_sub(1);
        }
    }

    /// Removes this process's slots and those of processes that are gone.
    fn close(&self) -> Result<(), String> {
        if let Ok(mut p) = self.pool.lock() {
            p.idle.clear();
            p.slots = 0;
        }
        let Ok(entries) = std::fs::read_dir(self.worktrees()) else {
            return Ok(());
        };
        let me = std::process::id();
        let mut removed = false;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix("slot-")
                .and_then(|r| r.split('-').next())
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            // SAFETY: kill with signal 0 only checks that the process exists.
            let alive = pid != me && unsafe { libc::kill(pid as i32, 0) } == 0;
            if alive {
                continue;
            }
            let path = e.path();
            match Git::new(&path).common_dir() {
                Ok(dir) => self
                    .admin(|| Git::new(dir).worktree_remove(&path))
                    .map_err(|e| e.to_string())?,
                Err(_) => std::fs::remove_dir_all(&path)
                    .map_err(|e| format!("removing {}: {e}", path.display()))?,
            }
            removed = true;
        }
        let _ = removed;
        Ok(())
    }

    /// Commits what the command left uncommitted; returns HEAD and, when
    /// they are known exactly, the paths changed since `job.commit`. They
    /// are when the command made no commit and left the index as the
    /// checkout wrote it (`index_before` is its stamp then): what `git add
    /// -A` staged is then the whole change. Blocking.
    fn produced_commit(
        &self,
        job: &Job,
        worktree: &Path,
        index_before: Option<IndexStamp>,
    ) -> Result<(String, Option<Vec<String>>), String> {
        let git = Git::new(worktree);
        let mut changed = None;
        if job.commit_changes {
            let untouched = index_before.is_some()
                && git.index_stamp() == index_before
                && git.head_commit().ok().as_deref() == Some(job.commit.as_str());
            let staged = git.add_all().map_err(|e| e.to_string())?;
            if untouched {
                changed = staged;
            }
            let msg = format!("autoresearch {}: changes left uncommitted", job.run_id);
            let args = ["commit", "--quiet", "--no-verify", "-m", &msg];
            // No auto-maintenance: it would run after every candidate.
            let args = [
                &["-c", "maintenance.auto=false", "-c", "gc.auto=0"][..],
                &args[..],
            ]
            .concat();
            let out = git.output(&args, &IDENTITY).map_err(|e| e.to_string())?;
            let text = String::from_utf8_lossy(&out.stdout);
            if !out.status.success() && !text.contains("nothing to commit") {
                return Err(format!(
                    "committing leftovers: {}{}",
                    text.trim(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        let head = git.head_commit().map_err(|e| e.to_string())?;
        self.remember(&job.run_id, worktree, &head);
        if head == job.commit {
            changed = Some(Vec::new());
        }
        Ok((head, changed))
    }
}

/// Writes this process's id (its own group's id, after `process_group(0)`)
/// to `path`, in decimal. Async-signal-safe: for the forked child before
/// exec.
fn write_pid(path: &std::ffi::CStr) {
    let mut digits = [0u8; 20];
    let mut n = unsafe { libc::getpid() } as u64;
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // SAFETY: plain syscalls on a valid C string and a stack buffer.
    unsafe {
        let fd = libc::open(
            path.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
            0o644,
        );
        if fd >= 0 {
            let bytes = &digits[at..];
            libc::write(fd, bytes.as_ptr().cast(), bytes.len());
            libc::close(fd);
        }
    }
}

/// Kills a process group when dropped: on normal exit (stragglers), on
/// timeout, and when the job's future is dropped (cancellation).
struct GroupGuard(i32);

impl GroupGuard {
    fn signal(&self, sig: i32) {
        if self.0 > 0 {
            // SAFETY: killpg has no memory-safety preconditions; an unknown
            // group yields ESRCH, which is fine.
            unsafe {
                libc::killpg(self.0, sig);
            }
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
    }
}

/// The last `limit` bytes of a file, as text.
pub fn read_tail(path: &Path, limit: usize) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(limit as u64);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::with_capacity((len - start) as usize);
    f.take(limit as u64).read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn read_head(path: &Path, limit: usize) -> std::io::Result<String> {
    let f = std::fs::File::open(path)?;
    let mut buf = Vec::new();
    f.take(limit as u64).read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn exit_status(st: std::process::ExitStatus) -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    match (st.code(), st.signal()) {
        (Some(c), _) => ExitStatus::Exited(c),
        (None, Some(s)) => ExitStatus::Signaled(s),
        (None, None) => ExitStatus::Exited(-1),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("blocking task failed: {e}"))
}

#[async_trait]
impl Executor for LocalExecutor {
    fn name(&self) -> String {
        "local".into()
    }

    async fn run(&self, job: Job) -> Result<JobReport, ExecError> {
        let this = self.inner.clone();
        let log_dir = self.log_dir(&job.run_id);
        let stdout_log = log_dir.join(format!("{}.stdout.log", job.step));
        let stderr_log = log_dir.join(format!("{}.stderr.log", job.step));
        let report = |status: ExitStatus,
                      tails: (String, String),
                      output,
                      duration,
                      (commit, changed_paths): (String, Option<Vec<String>>),
                      workspace: &Path| JobReport {
            status,
            output,
            metrics: None,
            stdout_tail: tails.0,
            stderr_tail: tails.1,
            workspace: workspace.display().to_string(),
            stdout_log: stdout_log.display().to_string(),
            stderr_log: stderr_log.display().to_string(),
            duration,
            commit,
            changed_paths,
        };

        // The index as the checkout left it: unchanged after the command,
        // what `git add` stages is the whole change (see `produced_commit`).
        let (files, worktree, index_before) = {
            let job2 = job.clone();
            let (out, err, dir) = (stdout_log.clone(), stderr_log.clone(), log_dir.clone());
            let this = this.clone();
            blocking(move || {
                let files = std::fs::create_dir_all(&dir)
                    .and_then(|_| Ok((std::fs::File::create(&out)?, std::fs::File::create(&err)?)))
                    .map_err(|e| format!("creating logs in {}: {e}", dir.display()));
                let wt = this.checkout(&job2);
                let stamp = match &wt {
                    Ok(path) if job2.commit_changes => Git::new(path).index_stamp(),
                    _ => None,
                };
                (files, wt, stamp)
            })
            .await
            .map_err(|e| self.inner.error(&job.run_id, "preparing the job", e))?
        };
        let (out_file, err_file) =
            files.map_err(|e| self.inner.error(&job.run_id, "creating log files", e))?;
        let worktree = match worktree {
            Ok(p) => p,
            Err(why) => {
                let status = ExitStatus::FailedToStart(format!(
                    "checking out {} of {}: {why}",
                    job.commit, job.repo
                ));
                return Ok(report(
                    status,
                    Default::default(),
                    String::new(),
                    Default::default(),
                    Default::default(),
                    Path::new(""),
                ));
            }
        };

        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg(&job.command)
            .current_dir(&worktree)
            .envs(&job.env)
            .env("AUTORESEARCH_RUN_ID", &job.run_id)
            .env("AUTORESEARCH_WORKTREE", &worktree)
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .env_remove("GIT_INDEX_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out_file))
            .stderr(Stdio::from(err_file))
            .process_group(0)
            .kill_on_drop(true);
        // The child records its process group itself, before the command
        // runs: a controller killed right after the spawn still leaves the
        // file `release` needs to kill the group.
        let pgid_file = log_dir.join(format!("{}.pgid", job.step));
        if let Ok(path) = std::ffi::CString::new(pgid_file.as_os_str().as_encoded_bytes()) {
            // SAFETY: the closure runs in the forked child before exec and
            // only makes async-signal-safe calls (getpid, open, write,
            // close) on memory prepared before the fork; no allocation.
            unsafe {
                cmd.pre_exec(move || {
                    write_pid(&path);
                    Ok(())
                });
            }
        }
        let started = Instant::now();
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let status = ExitStatus::FailedToStart(format!("spawning sh: {e}"));
                return Ok(report(
                    status,
                    Default::default(),
                    String::new(),
                    Default::default(),
                    Default::default(),
                    Path::new(""),
                ));
            }
        };
        let guard = GroupGuard(child.id().map(|p| p as i32).unwrap_or(0));
        let status = match tokio::time::timeout(job.limits.timeout, child.wait()).await {
            Ok(Ok(st)) => exit_status(st),
            Ok(Err(e)) => {
                return Err(self.inner.error(&job.run_id, "waiting for the command", e));
            }
            Err(_) => {
                guard.signal(libc::SIGTERM);
                let _ = tokio::time::timeout(job.limits.kill_grace, child.wait()).await;
                guard.signal(libc::SIGKILL);
                let _ = child.wait().await;
                ExitStatus::TimedOut
            }
        };
        let duration = started.elapsed();
        drop(guard);
        let _ = std::fs::remove_file(&pgid_file);

        let limit = job.limits.output_limit;
        let job2 = job.clone();
        let success = status.success();
        let (out_path, err_path) = (stdout_log.clone(), stderr_log.clone());
        let wt = worktree.clone();
        let (tails, output, commit) = blocking(move || {
            let stdout_tail = read_tail(&out_path, limit).unwrap_or_default();
            let stderr_tail = read_tail(&err_path, limit).unwrap_or_default();
            let source = match &job2.output {
                OutputSource::Stdout => out_path.clone(),
                OutputSource::File(rel) => worktree.join(rel),
            };
            let output = match &job2.output {
                OutputSource::Stdout => Ok(stdout_tail.clone()),
                OutputSource::File(rel) => {
                    read_head(&source, limit).map_err(|e| format!("reading {rel}: {e}"))
                }
            };
            // Metrics from the whole output, streamed: the tails above are
            // what is kept, not what is read.
            let output = output.map(|text| {
                let metrics = job2.metrics.clone().and_then(|spec| {
                    let file = std::fs::File::open(&source).ok()?;
                    MetricReader::new(spec).read_all(file).ok()
                });
                (text, metrics)
            });
            let commit = if success {
                this.produced_commit(&job2, &worktree, index_before)
            } else {
                Ok(Default::default())
            };
            ((stdout_tail, stderr_tail), output, commit)
        })
        .await
        .map_err(|e| self.inner.error(&job.run_id, "reading the job's output", e))?;
        let commit = commit.map_err(|e| {
            self.inner
                .error(&job.run_id, "recording the produced commit", e)
        })?;
        // A missing metrics file is the job's failure, not the executor's.
        let (output, metrics) = output.unwrap_or_default();
        let mut done = report(status, tails, output, duration, commit, &wt);
        done.metrics = metrics;
        Ok(done)
    }

    async fn release(&self, run_id: &str) -> Result<(), ExecError> {
        let slot = self.inner.known_checkout(run_id).map(|(p, _)| p);
        let base = self
            .inner
            .bases
            .lock()
            .ok()
            .and_then(|mut b| b.remove(run_id));
        self.inner.forget(run_id);
        let logs = self.log_dir(run_id);
        let res = blocking(move || kill_leftover_groups(&logs)).await;
        if let (Some(slot), Some(base)) = (slot, base) {
            // Reset off the loop's path; `close` waits for it.
            if let Ok(mut p) = self.inner.pool.lock() {
                p.resetting += 1;
            }
            let inner = self.inner.clone();
            let h = tokio::task::spawn_blocking(move || inner.reset_slot(&slot, &base));
            if let Ok(mut r) = self.inner.resets.lock() {
                r.retain(|h| !h.is_finished());
                r.push(h);
            }
        }
        res.map_err(|e| self.inner.error(run_id, "killing leftover processes", e))
    }

    async fn close(&self) -> Result<(), ExecError> {
        let pending: Vec<_> = self
            .inner
            .resets
            .lock()
            .map(|mut r| r.drain(..).collect())
            .unwrap_or_default();
        for h in pending {
            let _ = h.await;
        }
        let inner = self.inner.clone();
        match blocking(move || inner.close()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) | Err(e) => Err(self.inner.error("", "removing worktrees", e)),
        }
    }
}

/// Kills the process groups a killed controller left running for a run
/// (recorded in `*.pgid` files next to its logs).
fn kill_leftover_groups(log_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(log_dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "pgid") {
            if let Some(pgid) = std::fs::read_to_string(&p)
                .ok()
                .and_then(|t| t.trim().parse::<i32>().ok())
            {
                drop(GroupGuard(pgid));
            }
            let _ = std::fs::remove_file(&p);
        }
    }
}
