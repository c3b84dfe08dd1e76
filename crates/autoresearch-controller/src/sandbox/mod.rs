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

mod limits;

pub use limits::{ChildSetup, JobCgroup, become_subreaper, reap};
use serde::Deserialize;
use std::collections::BTreeMap;
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
        let mut a: Vec<String> = BWRAP_BASE.iter().map(|s| s.to_string()).collect();
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

/// The bubblewrap arguments every job starts from (the trial run too):
/// namespaces, the read-only root, a minimal `/dev`, its own `/proc`, a
/// private `/tmp`.
const BWRAP_BASE: &[&str] = &[
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
];

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
        .args(BWRAP_BASE)
        .args(["--unshare-net", "true"])
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
}
