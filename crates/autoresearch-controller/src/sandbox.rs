//! The jobs' sandbox: what a proposer or an evaluator may reach.
//!
//! With [bubblewrap](https://github.com/containers/bubblewrap) (`bwrap`,
//! Debian/Ubuntu package `bubblewrap`), each job runs in its own mount, PID
//! and IPC namespaces:
//!
//! - the whole filesystem read-only (`--ro-bind / /`), the job's checkout
//!   writable, plus the configured extra writable paths (tool caches such as
//!   `~/.cache/uv`, `~/.cargo`) and extra read-only binds;
//! - the controller's state directory (other slots, the ledger, other runs'
//!   logs) hidden behind an empty tmpfs, with only the files the job needs
//!   (the proposer's history file) bound back read-only;
//! - a private `/tmp`, a minimal `/dev` (GPU device nodes, `/dev/nvidia*`
//!   and `/dev/dri`, passed through when present) and its own `/proc`;
//! - a new PID namespace: when the job's first process ends, the kernel
//!   kills every process left in it, `setsid` daemons included;
//!   `--die-with-parent` ties it to the controller, so a killed controller
//!   takes its jobs with it;
//! - the network off when the job kind asks (`[evaluate] network = false`);
//! - the environment cleared to an allow-list plus `AUTORESEARCH_*`.
//!
//! Without bwrap (`sandbox = "none"`, or not installed in `auto` mode) a job
//! runs as the user with no filesystem isolation: writes outside its checkout
//! cannot be prevented. Its processes still cannot outlive it: the
//! controller is a child subreaper ([`become_subreaper`]), each job gets a
//! parent-death signal, and every process of the job is found and killed when
//! it ends (the executor's reaper).
//!
//! In both modes, [`ResourceLimits`] apply to every process of a job:
//! address space (`RLIMIT_AS`) and open files (`RLIMIT_NOFILE`) by rlimit,
//! process count by a `pids` cgroup when the controller may create one
//! (cgroup v1 or v2), else by `RLIMIT_NPROC` (which the kernel does not
//! enforce for root).

use serde::Deserialize;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// Which sandbox jobs run in (`[run] sandbox`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxMode {
    /// bwrap when it works on this machine, else none (with a warning).
    #[default]
    Auto,
    /// bwrap, or an error saying how to install it.
    Bwrap,
    /// No filesystem isolation (processes are still contained).
    None,
}

/// Per-job resource limits (`[run] memory_limit`, `open_files`,
/// `processes`). A job over a limit fails, which the loop records as a
/// crash.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResourceLimits {
    /// Address space of each process, in bytes (`RLIMIT_AS`).
    pub memory_bytes: Option<u64>,
    /// Open file descriptors of each process (`RLIMIT_NOFILE`).
    pub open_files: Option<u64>,
    /// Processes (and threads) of the whole job.
    pub processes: Option<u64>,
}

/// The sandbox settings of a loop.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// Which sandbox.
    pub mode: SandboxMode,
    /// Extra paths a job may write (a missing one is created as a folder;
    /// `~/` is the home).
    pub writable: Vec<PathBuf>,
    /// Extra paths bound read-only (useful only for paths `/` does not
    /// cover, e.g. under the hidden state directory).
    pub read_only: Vec<PathBuf>,
    /// Environment variables passed to jobs besides `AUTORESEARCH_*`:
    /// names, or patterns with one `*` (e.g. `*_API_KEY`). Empty: the
    /// default list ([`DEFAULT_ENV`]).
    pub env_allow: Vec<String>,
    /// The limits of every job.
    pub limits: ResourceLimits,
    /// Whether proposers may use the network.
    pub propose_network: bool,
    /// Whether evaluators may use the network.
    pub evaluate_network: bool,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            mode: SandboxMode::default(),
            writable: Vec::new(),
            read_only: Vec::new(),
            env_allow: Vec::new(),
            limits: ResourceLimits::default(),
            propose_network: true,
            evaluate_network: true,
        }
    }
}

/// The environment a job sees by default, besides `AUTORESEARCH_*`.
pub const DEFAULT_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TERM",
    "TZ",
    "*_API_KEY",
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_*",
    "HF_HOME",
    "UV_*",
    "CARGO_HOME",
    "RUSTUP_HOME",
    "VIRTUAL_ENV",
    "PYTHONPATH",
];

/// What one job needs from the sandbox.
#[derive(Clone, Debug)]
pub struct JobSpec<'a> {
    /// The user's repository: readable (its objects back the checkout's
    /// history), never writable, even under `/tmp`.
    pub repository: &'a Path,
    /// The job's checkout (writable).
    pub checkout: &'a Path,
    /// Where the command starts (inside the checkout).
    pub workdir: &'a Path,
    /// The `sh -c` command.
    pub command: &'a str,
    /// Variables the job must see (they pass the allow-list).
    pub env: &'a BTreeMap<String, String>,
    /// Whether the job may use the network.
    pub network: bool,
    /// Directories hidden from the job (the controller's state directory).
    pub hidden: &'a [PathBuf],
    /// Files or directories bound back read-only inside hidden ones.
    pub visible: &'a [PathBuf],
}

/// Why the sandbox cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// `sandbox = "bwrap"` was asked for and bwrap does not run here.
    #[error(
        "sandbox = \"bwrap\" was asked for but bubblewrap cannot run here ({reason}); install it (Debian/Ubuntu: `apt-get install bubblewrap`; Fedora: `dnf install bubblewrap`) or set `[run] sandbox = \"none\"`"
    )]
    BwrapUnavailable {
        /// What the trial run said.
        reason: String,
    },
}

/// The sandbox jobs run in, once checked on this machine.
#[derive(Clone, Debug)]
pub struct Sandbox {
    bwrap: Option<PathBuf>,
    config: SandboxConfig,
    /// Why `auto` fell back to none, for one warning.
    fallback: Option<String>,
}

impl Sandbox {
    /// Checks the configured sandbox: in `auto` and `bwrap` mode, a trial
    /// run of `bwrap` with the namespaces jobs use (cost: one short process,
    /// a few milliseconds). Errors only in `bwrap` mode.
    pub fn new(config: SandboxConfig) -> Result<Sandbox, SandboxError> {
        let trial = match config.mode {
            SandboxMode::None => Err("sandbox = \"none\"".to_string()),
            SandboxMode::Auto | SandboxMode::Bwrap => try_bwrap(),
        };
        match (trial, config.mode) {
            (Ok(path), _) => Ok(Sandbox {
                bwrap: Some(path),
                config,
                fallback: None,
            }),
            (Err(reason), SandboxMode::Bwrap) => Err(SandboxError::BwrapUnavailable { reason }),
            (Err(reason), _) => Ok(Sandbox {
                bwrap: None,
                fallback: (config.mode == SandboxMode::Auto).then_some(reason),
                config,
            }),
        }
    }

    /// No sandbox (processes still contained); for tests and other hosts.
    pub fn none() -> Sandbox {
        Sandbox {
            bwrap: None,
            config: SandboxConfig {
                mode: SandboxMode::None,
                ..SandboxConfig::default()
            },
            fallback: None,
        }
    }

    /// Whether jobs run under bwrap.
    pub fn is_isolated(&self) -> bool {
        self.bwrap.is_some()
    }

    /// Why `auto` mode runs jobs without bwrap, when it does.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// The limits every job gets.
    pub fn limits(&self) -> &ResourceLimits {
        &self.config.limits
    }

    /// Whether a job of this kind may use the network.
    pub fn network(&self, proposer: bool) -> bool {
        if proposer {
            self.config.propose_network
        } else {
            self.config.evaluate_network
        }
    }

    /// The command that runs `spec` in the sandbox, with its environment
    /// cleared to the allow-list and stdin closed. The caller adds stdout,
    /// stderr, the process group and [`ChildSetup::apply`] in `pre_exec`.
    pub fn command(&self, spec: &JobSpec<'_>) -> tokio::process::Command {
        let mut cmd = match &self.bwrap {
            Some(bwrap) => {
                let mut c = tokio::process::Command::new(bwrap);
                c.args(self.bwrap_args(spec));
                c.arg("sh").arg("-c").arg(spec.command);
                c
            }
            None => {
                let mut c = tokio::process::Command::new("sh");
                c.arg("-c").arg(spec.command);
                c
            }
        };
        cmd.current_dir(spec.workdir)
            .env_clear()
            .envs(self.environment(spec.env))
            .stdin(Stdio::null());
        cmd
    }

    /// The job's environment: the allowed variables of this process, then
    /// the job's own.
    pub fn environment(&self, job: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        self.environment_from(std::env::vars(), job)
    }

    /// [`Sandbox::environment`] with `base` standing for this process's
    /// environment.
    pub fn environment_from(
        &self,
        base: impl IntoIterator<Item = (String, String)>,
        job: &BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        let patterns: Vec<&str> = if self.config.env_allow.is_empty() {
            DEFAULT_ENV.to_vec()
        } else {
            self.config.env_allow.iter().map(String::as_str).collect()
        };
        let mut env: BTreeMap<String, String> = base
            .into_iter()
            .filter(|(k, _)| {
                k.starts_with("AUTORESEARCH_") || patterns.iter().any(|p| matches(p, k))
            })
            .collect();
        env.extend(job.iter().map(|(k, v)| (k.clone(), v.clone())));
        env
    }

    fn bwrap_args(&self, spec: &JobSpec<'_>) -> Vec<String> {
        let mut a: Vec<String> = [
            "--die-with-parent",
            "--unshare-pid",
            "--unshare-ipc",
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--tmpfs",
            "/tmp",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        if !spec.network {
            a.push("--unshare-net".into());
        }
        for dev in gpu_devices() {
            push3(&mut a, "--dev-bind", &dev, &dev);
        }
        // Under the private /tmp too (a repository in a temp dir).
        push3(&mut a, "--ro-bind", spec.repository, spec.repository);
        for h in spec.hidden {
            if h.exists() {
                a.push("--tmpfs".into());
                a.push(h.display().to_string());
            }
        }
        for v in spec.visible.iter().chain(&self.config.read_only) {
            let v = expand_home(v);
            if v.exists() {
                push3(&mut a, "--ro-bind", &v, &v);
            }
        }
        for w in &self.config.writable {
            let w = expand_home(w);
            // An existing path as it is (a file or a folder); a missing one
            // as a new folder.
            if w.exists() || std::fs::create_dir_all(&w).is_ok() {
                push3(&mut a, "--bind", &w, &w);
            }
        }
        push3(&mut a, "--bind", spec.checkout, spec.checkout);
        a.push("--chdir".into());
        a.push(spec.workdir.display().to_string());
        a
    }
}

fn push3(a: &mut Vec<String>, flag: &str, from: &Path, to: &Path) {
    a.push(flag.into());
    a.push(from.display().to_string());
    a.push(to.display().to_string());
}

/// `~/x` as a path under the home directory.
fn expand_home(p: &Path) -> PathBuf {
    match (p.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => p.to_path_buf(),
    }
}

/// Whether `name` matches `pattern` (a name, or one `*` standing for any text).
fn matches(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((pre, post)) => {
            name.len() >= pre.len() + post.len() && name.starts_with(pre) && name.ends_with(post)
        }
    }
}

/// GPU device nodes present on this machine.
fn gpu_devices() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/dev") {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with("nvidia") {
                out.push(e.path());
            }
        }
    }
    let dri = PathBuf::from("/dev/dri");
    if dri.exists() {
        out.push(dri);
    }
    out.sort();
    out
}

/// Runs `bwrap` once with the namespaces jobs use; its path, or why not.
fn try_bwrap() -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("bwrap"))
        .find(|p| p.is_file())
        .ok_or_else(|| "bwrap is not on PATH".to_string())?;
    let out = std::process::Command::new(&path)
        .args([
            "--die-with-parent",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-net",
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--tmpfs",
            "/tmp",
            "true",
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {}: {e}", path.display()))?;
    if out.status.success() {
        Ok(path)
    } else {
        Err(format!(
            "{} failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

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
/// Only these pids: a blanket `waitpid(-1)` would steal the exit status of
/// a job the runtime still waits for. Never blocks.
pub fn reap(pids: &[i32]) {
    for &pid in pids {
        // SAFETY: waitpid with WNOHANG and a null status pointer only
        // collects `pid` if it is an exited child of this process.
        unsafe {
            libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG);
        }
    }
}

/// Reaps this process's zombie children other than `skip` (the jobs the
/// runtime itself waits for): under [`become_subreaper`], a job's orphan
/// that ended on its own is re-parented here and waits to be collected.
/// Cost: one read of `/proc/*/stat`. Linux only; a no-op elsewhere.
pub fn reap_stray_zombies(skip: &std::collections::HashSet<i32>) {
    #[cfg(target_os = "linux")]
    {
        let me = std::process::id() as i32;
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        let mut stray = Vec::new();
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            if skip.contains(&pid) {
                continue;
            }
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // `pid (comm) S ppid ...`: the fields after the command name.
            let mut rest = stat.rsplit(')').next().unwrap_or("").split_whitespace();
            let (state, ppid) = (rest.next(), rest.next().and_then(|p| p.parse::<i32>().ok()));
            if state == Some("Z") && ppid == Some(me) {
                stray.push(pid);
            }
        }
        reap(&stray);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = skip;
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
    fn env_patterns_match_names_and_one_star() {
        assert!(matches("PATH", "PATH"));
        assert!(!matches("PATH", "PATHS"));
        assert!(matches("*_API_KEY", "ANTHROPIC_API_KEY"));
        assert!(matches("LC_*", "LC_ALL"));
        assert!(!matches("LC_*", "LANG"));
        assert!(!matches("A*A", "A"));
    }

    #[test]
    fn pids_format_in_decimal() {
        let mut buf = [0u8; 20];
        let n = format_pid(40213, &mut buf);
        assert_eq!(&buf[..n], b"40213");
        let n = format_pid(0, &mut buf);
        assert_eq!(&buf[..n], b"0");
    }
}
