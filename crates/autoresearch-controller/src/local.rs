//! [`LocalExecutor`]: runs jobs as child processes in private slot
//! repositories of a local repository.
//!
//! - Checkout: a pool of slots at `{state}/slots/slot-{pid}-{n}`, each a
//!   repository of its own sharing the user's objects (see [`slot`](crate::slot)):
//!   nothing a job does to its `.git` reaches the user's repository. A run
//!   takes a slot and its jobs share it until `release` puts it back; before
//!   every job the slot is made exactly the job's commit, with a fresh `.git`
//!   and nothing untracked or ignored. [`Executor::close`] removes the
//!   slots, and those of controllers that died.
//! - Candidate: after a job with [`Job::commit_changes`], the checkout's tree
//!   is committed by the controller as the single child of the job's commit
//!   (whatever the job did to history), in the user's object store.
//! - Process: `sh -c COMMAND` in its own process group. On timeout the group
//!   gets SIGTERM, then SIGKILL after the grace period; after every job (and
//!   when the job's future is dropped) the group gets SIGKILL, and every
//!   other process still marked with the slot (a `setsid` daemon) is found
//!   and killed ([`reaper`](crate::reaper)).
//! - Output: stdout and stderr go straight to files under
//!   `{state}/runs/{run_id}/`; only their tails are read back into memory.

use crate::git::GitError;
use crate::reaper;
use crate::sandbox::{ChildSetup, JobCgroup, JobSpec, Sandbox};
use crate::slot::{self, Produced, RepoDirs};
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

struct Inner {
    state_dir: PathBuf,
    /// Where jobs run (see [`crate::sandbox`]).
    sandbox: Sandbox,

    /// Each run's slot.
    checkouts: Mutex<HashMap<String, PathBuf>>,
    /// Slots no run holds.
    idle: Mutex<Vec<PathBuf>>,
    /// The user's repositories' directories, by `Job::repo`.
    repos: Mutex<HashMap<String, RepoDirs>>,
    next_slot: std::sync::atomic::AtomicUsize,
    /// Held-out data directories: hidden from every job but those with
    /// [`Job::held_out`] (in the sandbox).
    held_out: Vec<PathBuf>,
}

impl LocalExecutor {
    /// An executor keeping its worktrees under `{state_dir}/worktrees` and its logs under
    /// `{state_dir}/runs/{run_id}`. Creates nothing until the first job.
    pub fn new(state_dir: impl Into<PathBuf>) -> LocalExecutor {
        LocalExecutor {
            inner: Arc::new(Inner {
                state_dir: state_dir.into(),
                sandbox: Sandbox::none(),

                checkouts: Mutex::new(HashMap::new()),
                idle: Mutex::new(Vec::new()),
                repos: Mutex::new(HashMap::new()),
                next_slot: std::sync::atomic::AtomicUsize::new(0),
                held_out: Vec::new(),
            }),
        }
    }

    /// Runs every job in `sandbox` (by default none: jobs run as the user,
    /// their processes still contained).
    pub fn with_sandbox(self, sandbox: Sandbox) -> LocalExecutor {
        self.edited(|inner| inner.sandbox = sandbox)
    }

    /// Hides the directories `held_out` (the experiment's held-out data,
    /// `[confirm] data`) from every job but a held-out confirmation's
    /// ([`Job::held_out`]): in the bubblewrap sandbox each is covered by an
    /// empty tmpfs. Without the sandbox jobs run as the user and can read
    /// them.
    pub fn with_held_out(self, held_out: Vec<PathBuf>) -> LocalExecutor {
        self.edited(|inner| inner.held_out = held_out)
    }

    /// This executor with its settings changed by `edit` (a shared one is
    /// copied, without its slots).
    fn edited(self, edit: impl FnOnce(&mut Inner)) -> LocalExecutor {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| Inner {
            state_dir: shared.state_dir.clone(),
            sandbox: shared.sandbox.clone(),
            checkouts: Mutex::new(HashMap::new()),
            idle: Mutex::new(Vec::new()),
            repos: Mutex::new(HashMap::new()),
            next_slot: std::sync::atomic::AtomicUsize::new(0),
            held_out: shared.held_out.clone(),
        });
        edit(&mut inner);
        LocalExecutor {
            inner: Arc::new(inner),
        }
    }

    /// The sandbox jobs run in.
    pub fn sandbox(&self) -> &Sandbox {
        &self.inner.sandbox
    }

    /// Where the slot `run_id` holds lives, if it holds one.
    pub fn worktree_path(&self, run_id: &str) -> Option<PathBuf> {
        self.inner.known_checkout(run_id)
    }

    /// Where the logs of `run_id` go.
    pub fn log_dir(&self, run_id: &str) -> PathBuf {
        self.inner.log_dir(run_id)
    }
}

impl Inner {
    fn slots(&self) -> PathBuf {
        self.state_dir.join("slots")
    }

    fn new_slot(&self) -> PathBuf {
        let n = self
            .next_slot
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.slots()
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

    fn known_checkout(&self, run_id: &str) -> Option<PathBuf> {
        self.checkouts
            .lock()
            .ok()
            .and_then(|m| m.get(run_id).cloned())
    }

    fn repo(&self, repo: &str) -> Result<RepoDirs, GitError> {
        if let Some(d) = self.repos.lock().ok().and_then(|m| m.get(repo).cloned()) {
            return Ok(d);
        }
        let d = RepoDirs::of(Path::new(repo))?;
        if let Ok(mut m) = self.repos.lock() {
            m.insert(repo.to_string(), d.clone());
        }
        Ok(d)
    }

    /// Makes the run's slot (taking one if the run has none) a clean
    /// checkout of the job's commit. Blocking.
    fn checkout(&self, job: &Job) -> Result<PathBuf, String> {
        let repo = self.repo(&job.repo).map_err(|e| e.to_string())?;
        let path = match self.known_checkout(&job.run_id) {
            Some(p) => p,
            None => {
                let idle = self.idle.lock().ok().and_then(|mut i| i.pop());
                let p = idle.unwrap_or_else(|| self.new_slot());
                if let Ok(mut m) = self.checkouts.lock() {
                    m.insert(job.run_id.clone(), p.clone());
                }
                p
            }
        };
        slot::prepare(&repo, &path, &job.commit)?;
        let workdir = path.join(&job.workdir);
        if !workdir.is_dir() {
            return Err(format!(
                "{} is not a directory of {}",
                job.workdir, job.commit
            ));
        }
        Ok(path)
    }

    /// Removes this process's slots and those of processes that are gone.
    fn close(&self) -> Result<(), String> {
        let mine: Vec<PathBuf> = self
            .idle
            .lock()
            .map(|mut i| i.drain(..).collect())
            .unwrap_or_default();
        for p in &mine {
            reaper::kill_slot_processes(p);
        }
        let Ok(entries) = std::fs::read_dir(self.slots()) else {
            return Ok(());
        };
        let me = std::process::id();
        let held: Vec<PathBuf> = self
            .checkouts
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
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
            let path = e.path();
            if alive || held.iter().any(|h| *h == path || path.starts_with(h)) {
                continue;
            }
            if path.is_dir() {
                reaper::kill_slot_processes(&path);
                std::fs::remove_dir_all(&path)
                    .map_err(|e| format!("removing {}: {e}", path.display()))?;
            } else {
                let _ = std::fs::remove_file(&path);
            }
        }
        // The proposers' history goes with the last slot.
        let slots_left = std::fs::read_dir(self.slots())
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with("slot-"))
            })
            .unwrap_or(false);
        if !slots_left {
            let _ = std::fs::remove_dir_all(self.slots().join("proposed.git"));
        }
        Ok(())
    }

    /// Builds the candidate the job left in `slot` (when it commits its
    /// changes), after killing what still runs there. Blocking.
    fn produced(&self, job: &Job, slot: &Path, stdout: &str) -> Result<Produced, String> {
        reaper::kill_slot_processes(slot);
        if !job.commit_changes {
            return Ok(Produced {
                commit: job.commit.clone(),
                changed: Vec::new(),
                left_out: Vec::new(),
            });
        }
        let repo = self.repo(&job.repo).map_err(|e| e.to_string())?;
        slot::produce(&repo, slot, &job.commit, &job.run_id, stdout)
    }
}

impl LocalExecutor {
    /// The job's command in the sandbox, in `checkout`: its environment
    /// (the job's, the run id, the checkout, a git ceiling at the slots),
    /// what the sandbox hides and shows, its process cgroup when limited,
    /// and the child-side set-up (its process group id written to the
    /// returned file, rlimits, parent-death signal). The caller sets its
    /// output and process group.
    fn command(
        &self,
        job: &Job,
        checkout: &Path,
        log_dir: &Path,
    ) -> (
        tokio::process::Command,
        Option<JobCgroup>,
        PathBuf,
        Option<TimesFile>,
    ) {
        let mut env = job.env.clone();
        env.insert("AUTORESEARCH_RUN_ID".into(), job.run_id.clone());
        env.insert(
            "AUTORESEARCH_WORKTREE".into(),
            checkout.display().to_string(),
        );
        if job.commit_changes {
            env.insert(
                autoresearch_core::description::DESCRIPTION_ENV.into(),
                slot::description_path(checkout).display().to_string(),
            );
        }
        // Git in the job stops at the slot, even once its `.git` is gone:
        // it never finds the user's repository above it.
        env.insert(
            "GIT_CEILING_DIRECTORIES".into(),
            self.inner.slots().display().to_string(),
        );
        let repository = PathBuf::from(&job.repo);
        // The state directory is hidden; the proposer's history file, which
        // lives there, is bound back read-only, and so is the user's object
        // store, which the slot's history borrows (it may live outside the
        // repository's folder).
        let mut visible: Vec<PathBuf> = job
            .env
            .get("AUTORESEARCH_RESULTS")
            .map(PathBuf::from)
            .into_iter()
            .collect();
        if let Ok(dirs) = self.inner.repo(&job.repo) {
            visible.push(dirs.git_dir);
            visible.push(dirs.objects);
        }
        let mut hidden = vec![self.inner.state_dir.clone()];
        if job.held_out {
            visible.extend(self.inner.held_out.iter().cloned());
        } else {
            hidden.extend(self.inner.held_out.iter().cloned());
        }
        let workdir = checkout.join(&job.workdir);
        // In the sandbox the job's CPU time is reported by a wrapper shell
        // (see `usage`), through a file of its own next to the logs.
        let times = self
            .inner
            .sandbox
            .is_isolated()
            .then(|| {
                let path = log_dir.join(format!("{}.times", job.step));
                std::fs::File::create(&path)
                    .ok()
                    .map(|file| TimesFile { file, path })
            })
            .flatten();
        let wrapped = match &times {
            Some(_) => crate::usage::with_times(&job.command),
            None => job.command.clone(),
        };
        let spec = JobSpec {
            repository: &repository,
            checkout,
            workdir: &workdir,
            command: &wrapped,
            env: &env,
            network: self.inner.sandbox.network(job.commit_changes),
            hidden: &hidden,
            visible: &visible,
        };
        let mut cmd = self.inner.sandbox.command(&spec);
        let limits = self.inner.sandbox.limits();
        let cgroup = limits
            .processes
            .and_then(|n| JobCgroup::create(&format!("{}-{}", job.run_id, job.step), n));
        let setup = ChildSetup::new(limits, cgroup.as_ref());
        // The child records its process group itself, before the command
        // runs: a controller killed right after the spawn still leaves the
        // file `release` needs to kill the group.
        let pgid_file = log_dir.join(format!("{}.pgid", job.step));
        let pgid_path = std::ffi::CString::new(pgid_file.as_os_str().as_encoded_bytes()).ok();
        let times_fd = times.as_ref().map(|t| {
            use std::os::fd::AsRawFd;
            t.file.as_raw_fd()
        });
        // SAFETY: the closure runs in the forked child before exec and only
        // makes async-signal-safe calls (getpid, open, write, close, dup2,
        // prctl, setrlimit) on memory prepared before the fork; no
        // allocation.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(path) = &pgid_path {
                    write_pid(path);
                }
                if let Some(fd) = times_fd {
                    libc::dup2(fd, crate::usage::TIMES_FD);
                }
                setup.apply()
            });
        }
        (cmd, cgroup, pgid_file, times)
    }
}

/// The file a sandboxed job's wrapper writes its CPU times to (see
/// [`crate::usage::with_times`]); the parent's handle is kept until the
/// job has started.
struct TimesFile {
    file: std::fs::File,
    path: PathBuf,
}

/// What [`collect`] read: the tails, the output and its metrics, the candidate.
type Collected = (
    (String, String),
    Result<(String, Option<autoresearch_core::metrics::MetricReading>), String>,
    Result<Produced, String>,
);

/// What a job left, read once it ended: the log tails, the output metrics
/// are read from (and the metrics, from the whole output, when the job
/// asked), and on success the candidate it produced; on failure its
/// slot's processes are killed. Blocking.
fn collect(
    this: &Inner,
    job: &Job,
    worktree: &Path,
    (out_path, err_path): (&Path, &Path),
    success: bool,
) -> Collected {
    let limit = job.limits.output_limit;

    let stdout_tail = read_tail(out_path, limit).unwrap_or_default();
    let stderr_tail = read_tail(err_path, limit).unwrap_or_default();
    let source = match &job.output {
        OutputSource::Stdout => out_path.to_path_buf(),
        OutputSource::File(rel) => worktree.join(rel),
    };
    let output = match &job.output {
        OutputSource::Stdout => Ok(stdout_tail.clone()),
        OutputSource::File(rel) => {
            read_head(&source, limit).map_err(|e| format!("reading {rel}: {e}"))
        }
    };
    // Metrics from the whole output, streamed: the tails above are
    // what is kept, not what is read.
    let output = output.map(|text| {
        let metrics = job.metrics.clone().and_then(|spec| {
            let file = std::fs::File::open(&source).ok()?;
            MetricReader::new(spec).read_all(file).ok()
        });
        (text, metrics)
    });
    let commit = if success {
        this.produced(job, worktree, &stdout_tail)
    } else {
        reaper::kill_slot_processes(worktree);
        Ok(Default::default())
    };
    ((stdout_tail, stderr_tail), output, commit)
}

/// Appends a line saying which limit a job reached to its standard error
/// log, so that the crash it causes says why.
fn note_limit(stderr_log: &Path, what: &str) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(stderr_log) {
        let _ = writeln!(f, "autoresearch: {what}");
    }
}

/// Writes this process's id (its own group's id, after `process_group(0)`)
/// to `path`, in decimal. Async-signal-safe: for the forked child before
/// exec.
fn write_pid(path: &std::ffi::CStr) {
    let mut digits = [0u8; 20];
    // SAFETY: getpid has no preconditions and is async-signal-safe.
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
                      produced: Produced,
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
            cpu_time: None,
            changed_paths: (!produced.commit.is_empty()).then_some(produced.changed),
            commit: produced.commit,
            left_out: produced.left_out,
        };

        let (files, worktree) = {
            let job2 = job.clone();
            let (out, err, dir) = (stdout_log.clone(), stderr_log.clone(), log_dir.clone());
            let this = this.clone();
            blocking(move || {
                let files = std::fs::create_dir_all(&dir)
                    .and_then(|_| Ok((std::fs::File::create(&out)?, std::fs::File::create(&err)?)))
                    .map_err(|e| format!("creating logs in {}: {e}", dir.display()));
                (files, this.checkout(&job2))
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

        let (mut cmd, cgroup, pgid_file, times) = self.command(&job, &worktree, &log_dir);
        cmd.stdout(Stdio::from(out_file))
            .stderr(Stdio::from(err_file))
            .process_group(0)
            .kill_on_drop(true);
        let limits = self.inner.sandbox.limits().clone();
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
        let times_path = times.map(|t| t.path);
        let guard = GroupGuard(child.id().map(|p| p as i32).unwrap_or(0));
        // Waited for without reaping, so that the job's CPU time can be
        // read before `child.wait()` reaps it (see `usage`).
        let pid = child.id();
        let mut exited = tokio::task::spawn_blocking(move || match pid {
            Some(p) => crate::usage::wait_exited(p).is_ok(),
            None => false,
        });
        let (waited, timed_out) = match tokio::time::timeout(job.limits.timeout, &mut exited).await
        {
            Ok(waited) => (waited, false),
            Err(_) => {
                guard.signal(libc::SIGTERM);
                let waited = match tokio::time::timeout(job.limits.kill_grace, &mut exited).await {
                    Ok(waited) => waited,
                    Err(_) => {
                        guard.signal(libc::SIGKILL);
                        exited.await
                    }
                };
                (waited, true)
            }
        };
        let waited = matches!(waited, Ok(true));
        // Under bubblewrap the job's tree lives below bwrap's own init, which
        // bwrap does not reap: the wrapper shell's report stands in.
        let cpu_time = match &times_path {
            Some(path) => {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                let _ = std::fs::remove_file(path);
                crate::usage::read_times(&text)
            }
            None => pid
                .filter(|_| waited)
                .and_then(crate::usage::zombie_cpu_time),
        };
        let status = match child.wait().await {
            Ok(_) if timed_out => ExitStatus::TimedOut,
            Ok(st) => exit_status(st),
            Err(e) => {
                return Err(self.inner.error(&job.run_id, "waiting for the command", e));
            }
        };
        let duration = started.elapsed();
        drop(guard);

        if let Some(cg) = cgroup {
            if cg.hit_process_limit() {
                note_limit(
                    &stderr_log,
                    &format!(
                        "the job reached its process limit ({})",
                        limits.processes.unwrap_or(0)
                    ),
                );
            }
            // Every process of the job, re-parented or not, goes with it.
            drop(cg);
        }
        let _ = std::fs::remove_file(&pgid_file);

        let (this2, job2, wt2) = (this.clone(), job.clone(), worktree.clone());
        let (out_path, err_path) = (stdout_log.clone(), stderr_log.clone());
        let success = status.success();
        let wt = worktree.clone();
        let (tails, output, commit) =
            blocking(move || collect(&this2, &job2, &wt2, (&out_path, &err_path), success))
                .await
                .map_err(|e| self.inner.error(&job.run_id, "reading the job's output", e))?;
        // A checkout git cannot take (a nested repository without a
        // commit, ...) is the job's failure, not the executor's.
        let (status, commit) = match commit {
            Ok(c) => (status, c),
            Err(e) => (
                ExitStatus::FailedToStart(format!("building the candidate: {e}")),
                Produced::default(),
            ),
        };
        // A missing metrics file is the job's failure, not the executor's.
        let (output, metrics) = output.unwrap_or_default();
        let mut done = report(status, tails, output, duration, commit, &wt);
        done.metrics = metrics;
        done.cpu_time = cpu_time;
        Ok(done)
    }

    async fn release(&self, run_id: &str) -> Result<(), ExecError> {
        let slot = self
            .inner
            .checkouts
            .lock()
            .ok()
            .and_then(|mut m| m.remove(run_id));
        let logs = self.log_dir(run_id);
        let inner = self.inner.clone();
        blocking(move || {
            kill_leftover_groups(&logs);
            if let Some(slot) = slot {
                reaper::kill_slot_processes(&slot);
                if let Ok(mut i) = inner.idle.lock() {
                    i.push(slot);
                }
            }
        })
        .await
        .map_err(|e| self.inner.error(run_id, "killing leftover processes", e))
    }

    async fn close(&self) -> Result<(), ExecError> {
        let inner = self.inner.clone();
        match blocking(move || inner.close()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) | Err(e) => Err(self.inner.error("", "removing slots", e)),
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
