//! Slurm's command-line tools: `sbatch --parsable`, `scontrol show job -o`,
//! `scancel`, and `sacct` for a job's CPU time when the cluster keeps
//! accounting. Each call is a child process bounded in time; the cluster is
//! the one `SLURM_CONF` (or the system's configuration) names.

use autoresearch_core::vocab::JobState;
use std::path::Path;
use std::time::Duration;
use tokio::process::Command;

/// How long one call of a Slurm tool may take (a controller that does not
/// answer within it counts as unreachable).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A Slurm tool that failed.
#[derive(Debug, thiserror::Error)]
#[error("{tool} {args}: {reason}")]
pub struct ToolError {
    /// The tool (`sbatch`).
    pub tool: String,
    /// Its arguments, joined.
    pub args: String,
    /// What went wrong: it could not start, timed out, or what it printed.
    pub reason: String,
}

/// What Slurm says about a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobInfo {
    /// Its state.
    pub state: JobState,
    /// `Reason=` (why it waits, or why it ended); `None` is empty.
    pub reason: String,
    /// `ExitCode=code:signal`.
    pub exit: Option<(i32, i32)>,
    /// `TimeLimit=`, as Slurm prints it.
    pub time_limit: String,
}

async fn call(tool: &str, args: &[&str]) -> Result<String, ToolError> {
    let failed = |reason: String| ToolError {
        tool: tool.to_string(),
        args: args.join(" "),
        reason,
    };
    let mut cmd = Command::new(tool);
    cmd.args(args)
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null());
    let out = tokio::time::timeout(CALL_TIMEOUT, cmd.output())
        .await
        .map_err(|_| failed(format!("no answer within {}s", CALL_TIMEOUT.as_secs())))?
        .map_err(|e| failed(format!("could not run it ({e}); is Slurm installed here?")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(failed(format!("{} ({})", err.trim(), out.status)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Submits `script` with `options`; the job id (`sbatch --parsable`, the
/// part before a `;cluster`).
pub async fn submit(options: &[String], script: &Path) -> Result<String, ToolError> {
    let script = script.display().to_string();
    let mut args: Vec<&str> = vec!["--parsable"];
    args.extend(options.iter().map(String::as_str));
    args.push(&script);
    let out = call("sbatch", &args).await?;
    let id = out.trim().split(';').next().unwrap_or_default().to_string();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit() || b == b'_') {
        return Err(ToolError {
            tool: "sbatch".into(),
            args: args.join(" "),
            reason: format!("printed {:?}, not a job id", out.trim()),
        });
    }
    Ok(id)
}

/// What Slurm knows of `job_id` (`scontrol show job -o`); `Unknown` once
/// it has forgotten the job (older than `MinJobAge`).
pub async fn job_info(job_id: &str) -> Result<JobInfo, ToolError> {
    match call("scontrol", &["show", "job", "-o", job_id]).await {
        Ok(text) => Ok(parse_show_job(&text)),
        Err(e) if e.reason.contains("Invalid job id") => Ok(JobInfo {
            state: JobState::Unknown,
            reason: "no longer known to slurmctld".into(),
            exit: None,
            time_limit: String::new(),
        }),
        Err(e) => Err(e),
    }
}

/// Cancels `job_id`; a job already gone is not an error.
pub async fn cancel(job_id: &str) -> Result<(), ToolError> {
    match call("scancel", &[job_id]).await {
        Err(e) if !e.reason.contains("Invalid job id") => Err(e),
        _ => Ok(()),
    }
}

/// Cancels `job_id` without waiting for the answer (for `Drop`): the
/// child is reaped by a thread of its own.
pub fn cancel_detached(job_id: &str) {
    if let Ok(mut child) = std::process::Command::new("scancel")
        .arg(job_id)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        std::thread::spawn(move || child.wait());
    }
}

/// The CPU time (user + system) accounting recorded for `job_id`
/// (`sacct -X -j ID -o TotalCPU`); `None` when the cluster keeps no
/// accounting (`sacct` fails) or does not know the job. One bounded call.
pub async fn accounted_cpu_time(job_id: &str) -> Option<Duration> {
    let out = call("sacct", &["-n", "-P", "-X", "-j", job_id, "-o", "TotalCPU"])
        .await
        .ok()?;
    parse_slurm_duration(out.lines().next()?.trim())
}

/// A duration as `sacct` prints it (`[D-][HH:]MM:SS[.fff]`, e.g.
/// `00:01.234`, `01:02:03`, `2-00:00:00`); `None` for anything else.
pub fn parse_slurm_duration(text: &str) -> Option<Duration> {
    let (days, clock) = match text.split_once('-') {
        Some((d, rest)) => (d.parse::<u64>().ok()?, rest),
        None => (0, text),
    };
    let parts: Vec<&str> = clock.split(':').collect();
    let (h, m, s) = match parts.as_slice() {
        [m, s] => ("0", *m, *s),
        [h, m, s] => (*h, *m, *s),
        _ => return None,
    };
    let seconds: f64 = s.parse().ok()?;
    if !seconds.is_finite() || seconds < 0.0 {
        return None;
    }
    let whole = days * 86_400 + h.parse::<u64>().ok()? * 3_600 + m.parse::<u64>().ok()? * 60;
    Some(Duration::from_secs(whole) + Duration::from_secs_f64(seconds))
}

/// A job's state word in Slurm's terms (`JobState=` of `scontrol`, `%T`
/// of `squeue`, `State` of `sacct`, with `CANCELLED by 0` cut to its word).
pub fn state_of(word: &str) -> JobState {
    match word.split_whitespace().next().unwrap_or_default() {
        "PENDING" | "CONFIGURING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED" | "RESIZING"
        | "SUSPENDED" | "STOPPED" => JobState::Pending,
        "RUNNING" | "COMPLETING" | "SIGNALING" | "STAGE_OUT" => JobState::Running,
        "COMPLETED" => JobState::Completed,
        "FAILED" | "NODE_FAIL" | "BOOT_FAIL" | "DEADLINE" | "PREEMPTED" | "SPECIAL_EXIT"
        | "REVOKED" => JobState::Failed,
        "CANCELLED" => JobState::Cancelled,
        "TIMEOUT" => JobState::Timeout,
        "OUT_OF_MEMORY" => JobState::OutOfMemory,
        _ => JobState::Unknown,
    }
}

/// Reads the `Key=Value` pairs of `scontrol show job -o`.
pub fn parse_show_job(text: &str) -> JobInfo {
    let mut info = JobInfo {
        state: JobState::Unknown,
        reason: String::new(),
        exit: None,
        time_limit: String::new(),
    };
    for field in text.split_whitespace() {
        let Some((key, value)) = field.split_once('=') else {
            continue;
        };
        match key {
            "JobState" => info.state = state_of(value),
            "Reason" if value != "None" => info.reason = value.to_string(),
            "ExitCode" => {
                info.exit = value
                    .split_once(':')
                    .and_then(|(c, s)| Some((c.parse().ok()?, s.parse().ok()?)));
            }
            "TimeLimit" => info.time_limit = value.to_string(),
            _ => {}
        }
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_job_lines_read() {
        let line = "JobId=7 JobName=ar UserId=root(0) JobState=TIMEOUT Reason=TimeLimit Dependency=(null) ExitCode=0:15 RunTime=00:01:02 TimeLimit=00:01:00";
        let info = parse_show_job(line);
        assert_eq!(info.state, JobState::Timeout);
        assert_eq!(info.reason, "TimeLimit");
        assert_eq!(info.exit, Some((0, 15)));
        assert_eq!(info.time_limit, "00:01:00");
        let info = parse_show_job("JobId=8 JobState=PENDING Reason=None ExitCode=0:0");
        assert_eq!(info.state, JobState::Pending);
        assert_eq!(info.reason, "");
    }

    #[test]
    fn sacct_durations_read() {
        let d = |s: &str| parse_slurm_duration(s);
        assert_eq!(d("00:01.500"), Some(Duration::from_millis(1500)));
        assert_eq!(d("01:02:03"), Some(Duration::from_secs(3723)));
        assert_eq!(d("2-00:00:01"), Some(Duration::from_secs(2 * 86_400 + 1)));
        assert_eq!(d(""), None);
        assert_eq!(d("soon"), None);
        assert_eq!(d("1:2:3:4"), None);
    }

    #[test]
    fn state_words_map() {
        for (word, state) in [
            ("PENDING", JobState::Pending),
            ("RUNNING", JobState::Running),
            ("COMPLETING", JobState::Running),
            ("COMPLETED", JobState::Completed),
            ("FAILED", JobState::Failed),
            ("NODE_FAIL", JobState::Failed),
            ("CANCELLED by 0", JobState::Cancelled),
            ("TIMEOUT", JobState::Timeout),
            ("OUT_OF_MEMORY", JobState::OutOfMemory),
            ("WHATEVER", JobState::Unknown),
        ] {
            assert_eq!(state_of(word), state, "{word}");
        }
    }
}
