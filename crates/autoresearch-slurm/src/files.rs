//! A job's files under `{workdir}/runs/{run_id}/`, all named by its step:
//! the batch script (`{step}.sh`), its output files (`{step}.stdout.log`,
//! `{step}.stderr.log`), what the script writes when the command ends
//! (`{step}.exit`: exit code and duration; `{step}.times`: the command's
//! CPU time) and the checkout it ran in (`{step}.checkout`), from which a
//! job's report is read, by the controller that waited for it or by the
//! next one after a restart.

use autoresearch_core::exec::{ExitStatus, Job, JobReport, OutputSource};
use autoresearch_core::jobs::{Candidate, Checkouts};
use autoresearch_core::metrics::{MetricReader, MetricReading};
use autoresearch_core::vocab::JobState;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How the batch script saw its command end (`{step}.exit` and
/// `{step}.times`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Exit {
    /// The command's exit status as the shell reports it (128 + signal for
    /// a killed command).
    pub code: i32,
    /// Wall time of the command.
    pub duration: Duration,
    /// User + system time of the command's process tree (the shell's
    /// `times` for its children); `None` when not written.
    pub cpu: Option<Duration>,
}

/// A job's files under `{workdir}/runs/{run_id}/`.
#[derive(Clone, Debug)]
pub(crate) struct Logs {
    pub dir: PathBuf,
    pub script: PathBuf,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    pub exit: PathBuf,
    pub times: PathBuf,
    pub checkout: PathBuf,
}

impl Logs {
    pub fn of(dir: &Path, step: &str) -> Logs {
        Logs {
            dir: dir.to_path_buf(),
            script: dir.join(format!("{step}.sh")),
            stdout: dir.join(format!("{step}.stdout.log")),
            stderr: dir.join(format!("{step}.stderr.log")),
            exit: dir.join(format!("{step}.exit")),
            times: dir.join(format!("{step}.times")),
            checkout: dir.join(format!("{step}.checkout")),
        }
    }

    /// The directory, empty logs and no exit or times file of an earlier
    /// job.
    pub fn create(&self) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir)
            .and_then(|_| std::fs::File::create(&self.stdout).map(drop))
            .and_then(|_| std::fs::File::create(&self.stderr).map(drop))
            .map_err(|e| format!("creating logs in {}: {e}", self.dir.display()))?;
        for stale in [&self.exit, &self.times] {
            match std::fs::remove_file(stale) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(format!("removing {}: {e}", stale.display()));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Records the checkout the job runs in, for a controller that reads
    /// its output after a restart.
    pub fn write_checkout(&self, checkout: &Path) -> Result<(), String> {
        std::fs::write(&self.checkout, checkout.display().to_string())
            .map_err(|e| format!("writing {}: {e}", self.checkout.display()))
    }

    /// The checkout [`Logs::write_checkout`] recorded; empty when none.
    pub fn read_checkout(&self) -> PathBuf {
        std::fs::read_to_string(&self.checkout)
            .map(PathBuf::from)
            .unwrap_or_default()
    }

    /// How the script saw the command end. A job Slurm saw complete may
    /// have written its files on another node a moment ago: they are
    /// waited for a few seconds (a shared filesystem's attribute cache).
    /// Blocking.
    pub fn read_exit(&self, state: &JobState) -> Option<Exit> {
        let patience = match state {
            JobState::Completed | JobState::Failed => Duration::from_secs(5),
            _ => Duration::ZERO,
        };
        let until = Instant::now() + patience;
        loop {
            if let Ok(text) = std::fs::read_to_string(&self.exit) {
                let mut it = text.split_whitespace();
                let code = it.next()?.parse().ok()?;
                let ms = it.next().and_then(|m| m.parse().ok()).unwrap_or(0);
                let cpu = std::fs::read_to_string(&self.times)
                    .ok()
                    .and_then(|t| autoresearch_core::cost::shell_times_children(&t));
                return Some(Exit {
                    code,
                    duration: Duration::from_millis(ms),
                    cpu,
                });
            }
            if Instant::now() >= until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A report with nothing read yet.
pub(crate) fn report(job: &Job, status: ExitStatus, logs: &Logs, checkout: &Path) -> JobReport {
    JobReport {
        status,
        output: String::new(),
        metrics: None,
        stdout_tail: String::new(),
        stderr_tail: String::new(),
        workspace: checkout.display().to_string(),
        stdout_log: logs.stdout.display().to_string(),
        stderr_log: logs.stderr.display().to_string(),
        duration: Duration::ZERO,
        commit: if job.commit_changes {
            String::new()
        } else {
            job.commit.clone()
        },
        changed_paths: None,
        left_out: Vec::new(),
        // Filled in from `{step}.times` (or `sacct`) by the caller.
        cpu_time: None,
    }
}

/// What a finished job left: its log tails, the output metrics are read
/// from and the metrics (from all of it), and after a successful proposer
/// the candidate. Blocking.
pub(crate) fn collect(
    job: &Job,
    checkouts: &dyn Checkouts,
    logs: &Logs,
    checkout: &Path,
    success: bool,
) -> JobReport {
    let limit = job.limits.output_limit;
    let mut r = report(job, ExitStatus::Exited(0), logs, checkout);
    r.commit = job.commit.clone();
    r.stdout_tail = read_tail(&logs.stdout, limit).unwrap_or_default();
    r.stderr_tail = read_tail(&logs.stderr, limit).unwrap_or_default();
    let source = match &job.output {
        OutputSource::Stdout => logs.stdout.clone(),
        OutputSource::File(rel) => checkout.join(&job.workdir).join(rel),
    };
    r.output = match &job.output {
        OutputSource::Stdout => r.stdout_tail.clone(),
        OutputSource::File(_) => read_head(&source, limit).unwrap_or_default(),
    };
    r.metrics = job
        .metrics
        .clone()
        .and_then(|spec| -> Option<MetricReading> {
            let file = std::fs::File::open(&source).ok()?;
            MetricReader::new(spec).read_all(file).ok()
        });
    if !job.commit_changes {
        r.changed_paths = Some(Vec::new());
        return r;
    }
    if !success {
        r.commit = String::new();
        return r;
    }
    match checkouts.candidate(job, checkout, &r.stdout_tail) {
        Ok(Candidate {
            commit,
            changed_paths,
            left_out,
        }) => {
            r.commit = commit;
            r.changed_paths = Some(changed_paths);
            r.left_out = left_out;
        }
        Err(e) => {
            r.commit = String::new();
            r.status = ExitStatus::FailedToStart(format!("building the candidate: {e}"));
        }
    }
    r
}

/// Appends `line` to a log (why Slurm ended the job).
pub(crate) fn note_line(log: &Path, line: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(log)
    {
        let _ = writeln!(f, "{line}");
    }
}

/// A value in single quotes for `sh`.
pub(crate) fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn read_tail(path: &Path, limit: usize) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(limit as u64);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.take(limit as u64).read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn read_head(path: &Path, limit: usize) -> std::io::Result<String> {
    let mut buf = Vec::new();
    std::fs::File::open(path)?
        .take(limit as u64)
        .read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn exit_and_times_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let logs = Logs::of(dir.path(), "evaluate-0");
        logs.create().unwrap();
        assert_eq!(logs.read_exit(&JobState::Cancelled), None);
        std::fs::write(&logs.exit, "3 1500\n").unwrap();
        let exit = logs.read_exit(&JobState::Failed).unwrap();
        assert_eq!(
            (exit.code, exit.duration, exit.cpu),
            (3, Duration::from_millis(1500), None)
        );
        std::fs::write(&logs.times, "0m0.00s 0m0.00s\n0m1.25s 0m0.25s\n").unwrap();
        let exit = logs.read_exit(&JobState::Completed).unwrap();
        assert_eq!(exit.cpu, Some(Duration::from_millis(1500)));
        // A new job of the step starts without them.
        logs.create().unwrap();
        assert!(!logs.exit.exists() && !logs.times.exists());
        logs.write_checkout(Path::new("/w/slots/slot-1")).unwrap();
        assert_eq!(logs.read_checkout(), PathBuf::from("/w/slots/slot-1"));
    }
}
