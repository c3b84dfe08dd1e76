//! What holds a job's processes whatever the sandbox: the parent-death
//! signal and rlimits set between fork and exec ([`ChildSetup`]), a `pids`
//! cgroup per job ([`JobCgroup`]), and the subreaper that collects a job's
//! orphans when no PID namespace does.

use super::ResourceLimits;
use std::ffi::CString;
use std::path::PathBuf;

/// Makes this process a child subreaper (Linux `PR_SET_CHILD_SUBREAPER`):
/// a job's orphaned descendants (a `setsid` daemon whose parent exited) are
/// re-parented to the controller instead of init, so they stay findable
/// and killable. Call once, early; a no-op elsewhere.
pub fn become_subreaper() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer flag and
    // changes only this process's attribute.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
}

/// Reaps the given processes if they are this process's exited children
/// (re-parented orphans of jobs, once killed, under [`become_subreaper`]).
/// Only these pids: a blanket `waitpid(-1)`, or one over every zombie child,
/// would steal the exit status of a job or a git command another thread
/// still waits for. (An orphan that ends on its own before the reaper finds
/// it stays a zombie of the controller until it exits.) Never blocks.
pub fn reap(pids: &[i32]) {
    for &pid in pids {
        // SAFETY: waitpid with WNOHANG and a null status pointer only
        // collects `pid` if it is an exited child of this process.
        unsafe {
            libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG);
        }
    }
}

/// What a job's child process does to itself between fork and exec: the
/// parent-death signal, the rlimits, joining the job's cgroup. Everything is
/// prepared before the fork, so [`ChildSetup::apply`] only makes
/// async-signal-safe system calls.
#[derive(Debug)]
pub struct ChildSetup {
    rlimits: Vec<(libc::__rlimit_resource_t, u64)>,
    cgroup_procs: Vec<CString>,
}

impl ChildSetup {
    /// The setup for a job under `limits`, joining `cgroup` when given.
    pub fn new(limits: &ResourceLimits, cgroup: Option<&JobCgroup>) -> ChildSetup {
        let mut rlimits = Vec::new();
        if let Some(m) = limits.memory_bytes {
            rlimits.push((libc::RLIMIT_AS, m));
        }
        if let Some(n) = limits.open_files {
            rlimits.push((libc::RLIMIT_NOFILE, n));
        }
        if let (Some(p), None) = (limits.processes, cgroup) {
            rlimits.push((libc::RLIMIT_NPROC, p));
        }
        let cgroup_procs = cgroup
            .map(|c| {
                c.dirs
                    .iter()
                    .filter_map(|d| {
                        CString::new(d.join("cgroup.procs").as_os_str().as_encoded_bytes()).ok()
                    })
                    .collect()
            })
            .unwrap_or_default();
        ChildSetup {
            rlimits,
            cgroup_procs,
        }
    }

    /// Applies the setup in the child. Only async-signal-safe calls (prctl,
    /// setrlimit, getpid, open, write, close); no allocation.
    pub fn apply(&self) -> std::io::Result<()> {
        // SAFETY: every call below is a plain system call on memory
        // prepared before the fork (see the type's doc).
        unsafe {
            #[cfg(target_os = "linux")]
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            for (resource, value) in &self.rlimits {
                let lim = libc::rlimit {
                    rlim_cur: *value,
                    rlim_max: *value,
                };
                if libc::setrlimit(*resource, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for procs in &self.cgroup_procs {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd >= 0 {
                    let mut buf = [0u8; 20];
                    let n = format_pid(libc::getpid(), &mut buf);
                    libc::write(fd, buf.as_ptr().cast(), n);
                    libc::close(fd);
                }
            }
        }
        Ok(())
    }
}

/// Writes `pid` in decimal into `buf`; the number of bytes written.
fn format_pid(pid: libc::pid_t, buf: &mut [u8; 20]) -> usize {
    let mut digits = [0u8; 20];
    let mut n = 0;
    let mut v = pid.max(0) as u64;
    loop {
        digits[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for i in 0..n {
        buf[i] = digits[n - 1 - i];
    }
    n
}

/// A job's own cgroup (process count, and a way to kill every process of
/// the job at once), when this process may create one: cgroup v2
/// (`/sys/fs/cgroup/cgroup.controllers` lists `pids`) or v1 (a writable
/// `/sys/fs/cgroup/pids`). Removed when dropped, after killing what is left.
#[derive(Debug)]
pub struct JobCgroup {
    dirs: Vec<PathBuf>,
}

impl JobCgroup {
    /// Creates `autoresearch-{name}` with `pids.max = processes`; `None`
    /// when cgroups cannot be used here (the caller falls back to rlimits).
    pub fn create(name: &str, processes: u64) -> Option<JobCgroup> {
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let leaf = format!("autoresearch-{safe}-{}", std::process::id());
        let roots = [
            PathBuf::from("/sys/fs/cgroup/pids"),
            PathBuf::from("/sys/fs/cgroup/unified"),
            PathBuf::from("/sys/fs/cgroup"),
        ];
        for root in roots {
            let dir = root.join(&leaf);
            if std::fs::create_dir(&dir).is_err() {
                continue;
            }
            if std::fs::write(dir.join("pids.max"), processes.to_string()).is_ok() {
                return Some(JobCgroup { dirs: vec![dir] });
            }
            let _ = std::fs::remove_dir(&dir);
        }
        None
    }

    /// The live processes in the cgroup.
    pub fn pids(&self) -> Vec<i32> {
        self.dirs
            .iter()
            .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|s| {
                s.lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect()
    }

    /// Whether the process limit was hit (`pids.events` counts refusals).
    pub fn hit_process_limit(&self) -> bool {
        self.dirs.iter().any(|d| {
            std::fs::read_to_string(d.join("pids.events"))
                .ok()
                .and_then(|s| {
                    s.split_whitespace()
                        .nth(1)
                        .and_then(|n| n.parse::<u64>().ok())
                })
                .is_some_and(|n| n > 0)
        })
    }

    /// Kills every process in the cgroup until none is left (at most a
    /// second); how many it killed.
    pub fn kill_all(&self) -> usize {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        let mut killed = 0;
        loop {
            let pids = self.pids();
            if pids.is_empty() || std::time::Instant::now() > deadline {
                return killed;
            }
            for pid in &pids {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe {
                    libc::kill(*pid, libc::SIGKILL);
                }
            }
            killed += pids.len();
            reap(&pids);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

impl Drop for JobCgroup {
    fn drop(&mut self) {
        self.kill_all();
        for d in &self.dirs {
            if let Err(e) = std::fs::remove_dir(d) {
                tracing::debug!("removing cgroup {}: {e}", d.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_format_in_decimal() {
        let mut buf = [0u8; 20];
        let n = format_pid(40213, &mut buf);
        assert_eq!(&buf[..n], b"40213");
        let n = format_pid(0, &mut buf);
        assert_eq!(&buf[..n], b"0");
    }
}
