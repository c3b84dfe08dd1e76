//! The judge: an external command decides.
//!
//! The command runs with `sh -c` in a fresh temporary directory, in a process
//! group of its own. Its stdin is a JSON document with both sides (run id,
//! commit, diff, every result's outputs); the same document is at the path
//! in `AUTORESEARCH_JUDGE_INPUT`. It must exit 0 and print a JSON object
//! `{"verdict": "keep"|"discard", "reason": "..."}`, alone or as the last
//! such line of its output. stdout and stderr go to files; only their last
//! [`TAIL_BYTES`] are read. On timeout the whole process group is killed.
//! A judge that fails, times out or prints no valid verdict gives a discard
//! whose reason says why: it never promotes.

use crate::spec::{CompareSpec, JudgeSpec};
use async_trait::async_trait;
use autoresearch_core::compare::{Comparator, CompareError, Decision, Evidence, Verdict};
use serde_json::{Value, json};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// How much of the end of the judge's stdout and stderr is read.
pub const TAIL_BYTES: u64 = 64 * 1024;

/// See the module docs.
#[derive(Clone, Debug)]
pub struct Judge {
    spec: JudgeSpec,
}

/// The document a judge reads on stdin.
pub fn judge_input(incumbent: &Evidence, candidate: &Evidence) -> Value {
    let side = |e: &Evidence| {
        json!({
            "run_id": e.run_id,
            "commit": e.commit,
            "diff": e.diff,
            "results": e.results.iter().map(|r| json!({
                "evaluator": r.evaluator,
                "outputs": r.outputs().unwrap_or_else(|_| Value::String(r.outputs_json.clone())),
                "evaluated_at_ms": r.evaluated_at_ms,
            })).collect::<Vec<_>>(),
        })
    };
    json!({"incumbent": side(incumbent), "candidate": side(candidate)})
}

/// A verdict read from a judge's output.
#[derive(Clone, Debug, PartialEq)]
pub struct JudgeVerdict {
    /// Whether the verdict was `keep` (otherwise it was `discard`).
    pub keep: bool,
    /// The judge's one-line reason (empty when it gave none).
    pub reason: String,
    /// The whole JSON object the judge printed.
    pub raw: Value,
}

/// Reads the verdict from a judge's stdout: the whole output as one JSON
/// object, or else the last line that is a JSON object with a `verdict` key.
/// Errors say what is wrong with the output.
pub fn parse_verdict(stdout: &str) -> Result<JudgeVerdict, String> {
    let whole = serde_json::from_str::<Value>(stdout.trim())
        .ok()
        .filter(Value::is_object);
    let object = whole.or_else(|| {
        stdout.lines().rev().find_map(|l| {
            serde_json::from_str::<Value>(l.trim())
                .ok()
                .filter(|v| v.get("verdict").is_some())
        })
    });
    let Some(object) = object else {
        let shown: String = stdout.trim().chars().take(200).collect();
        return Err(if shown.is_empty() {
            "judge printed nothing".to_string()
        } else {
            format!("judge printed no JSON verdict object: {shown:?}")
        });
    };
    let keep = match object.get("verdict") {
        Some(Value::String(s)) if s.trim() == Verdict::Keep.as_str() => true,
        Some(Value::String(s)) if s.trim() == Verdict::Discard.as_str() => false,
        Some(other) => {
            return Err(format!(
                "judge verdict must be \"keep\" or \"discard\", got {other}"
            ));
        }
        None => return Err("judge output has no \"verdict\" key".to_string()),
    };
    let reason = match object.get("reason") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    Ok(JudgeVerdict {
        keep,
        reason,
        raw: object,
    })
}

/// What a judge process did.
struct JudgeRun {
    status: Option<i32>,
    timed_out: bool,
    stdout: String,
    stderr: String,
}

fn tail(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Kills the judge's whole process group when dropped: after the judge
/// exits (so it leaves nothing behind), on timeout, and when the comparison
/// itself is cancelled (the loop shutting down drops its future).
struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            // SAFETY: killpg only sends a signal; the group is the one
            // created for this child (process_group(0)), so no unrelated
            // process is hit.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }
}

async fn run_judge(spec: &JudgeSpec, input: Vec<u8>) -> Result<JudgeRun, String> {
    // Files are made off the executor: a temporary directory holding the
    // input, and the two output files.
    let prepared = tokio::task::spawn_blocking(move || {
        let dir = tempfile::Builder::new()
            .prefix("autoresearch-judge-")
            .tempdir()
            .map_err(|e| format!("creating the judge's directory: {e}"))?;
        let path = |name: &str| dir.path().join(name);
        let io = |what: &str, p: &Path, e: std::io::Error| format!("{what} {}: {e}", p.display());
        std::fs::write(path("input.json"), input)
            .map_err(|e| io("writing", &path("input.json"), e))?;
        let stdin = std::fs::File::open(path("input.json"))
            .map_err(|e| io("opening", &path("input.json"), e))?;
        let stdout = std::fs::File::create(path("stdout"))
            .map_err(|e| io("creating", &path("stdout"), e))?;
        let stderr = std::fs::File::create(path("stderr"))
            .map_err(|e| io("creating", &path("stderr"), e))?;
        Ok::<_, String>((dir, stdin, stdout, stderr))
    })
    .await
    .map_err(|e| format!("preparing the judge's files: {e}"))??;
    let (dir, stdin, stdout, stderr) = prepared;
    let input_path = dir.path().join("input.json");
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(&spec.command)
        .current_dir(dir.path())
        .env("AUTORESEARCH_JUDGE_INPUT", &input_path)
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting judge `sh -c {:?}`: {e}", spec.command))?;
    let group = GroupGuard(child.id().and_then(|p| i32::try_from(p).ok()));
    let waited = tokio::time::timeout(Duration::from_secs(spec.timeout_secs), child.wait()).await;
    drop(group);
    let (status, timed_out) = match waited {
        Ok(Ok(st)) => (st.code(), false),
        Ok(Err(e)) => return Err(format!("waiting for the judge: {e}")),
        Err(_) => {
            let _ = child.wait().await;
            (None, true)
        }
    };
    let (stdout, stderr) = tokio::task::spawn_blocking(move || {
        let r = (tail(&out_path), tail(&err_path));
        drop(dir);
        r
    })
    .await
    .map_err(|e| format!("reading the judge's output: {e}"))?;
    Ok(JudgeRun {
        status,
        timed_out,
        stdout: stdout.map_err(|e| format!("reading the judge's stdout: {e}"))?,
        stderr: stderr.map_err(|e| format!("reading the judge's stderr: {e}"))?,
    })
}

fn last_chars(s: &str, n: usize) -> String {
    let count = s.chars().count();
    s.chars().skip(count.saturating_sub(n)).collect()
}

impl Judge {
    /// A judge that runs `spec.command` with `sh -c` on each comparison, killed after
    /// `spec.timeout_secs`.
    pub fn new(spec: JudgeSpec) -> Self {
        Judge { spec }
    }

    fn failed(&self, why: String, run: Option<&JudgeRun>) -> Decision {
        let mut d = json!({"comparator": self.spec(), "error": why});
        if let Some(r) = run {
            d["exit_code"] = json!(r.status);
            d["timed_out"] = json!(r.timed_out);
            d["stdout_tail"] = json!(last_chars(&r.stdout, 2000));
            d["stderr_tail"] = json!(last_chars(&r.stderr, 2000));
        }
        Decision::new(Verdict::Discard, format!("judge failed: {why}"), d)
    }
}

#[async_trait]
impl Comparator for Judge {
    fn spec(&self) -> String {
        CompareSpec::Judge(self.spec.clone()).to_string()
    }

    async fn compare(
        &self,
        incumbent: &Evidence,
        candidate: &Evidence,
    ) -> Result<Decision, CompareError> {
        let input = judge_input(incumbent, candidate).to_string().into_bytes();
        let run = match run_judge(&self.spec, input).await {
            Ok(r) => r,
            Err(why) => return Ok(self.failed(why, None)),
        };
        if run.timed_out {
            let why = format!("timed out after {} s", self.spec.timeout_secs);
            return Ok(self.failed(why, Some(&run)));
        }
        if run.status != Some(0) {
            let why = match run.status {
                Some(c) => format!("exited with status {c}"),
                None => "killed by a signal".to_string(),
            };
            return Ok(self.failed(why, Some(&run)));
        }
        match parse_verdict(&run.stdout) {
            Err(why) => Ok(self.failed(why, Some(&run))),
            Ok(v) => {
                let verdict = if v.keep {
                    Verdict::Keep
                } else {
                    Verdict::Discard
                };
                let reason = if v.reason.is_empty() {
                    format!("judge: {} (no reason given)", verdict.as_str())
                } else {
                    format!("judge: {}", v.reason)
                };
                Ok(Decision::new(
                    verdict,
                    reason,
                    json!({
                        "comparator": self.spec(),
                        "judge": v.raw,
                        "stderr_tail": last_chars(&run.stderr, 2000),
                    }),
                ))
            }
        }
    }
}
