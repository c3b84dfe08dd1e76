//! A small archetype-runner `state.db` (the schema of
//! shared/reference/compatibility.md), for the demo's ingest step: a fleet
//! of agent sessions on two experiments, some finished, one crashed, one
//! still running, with the reports finished sessions leave.

use anyhow::Context;
use rusqlite::{Connection, params};
use std::path::Path;

const SCHEMA: &str = "
CREATE TABLE agents (
    agent_id TEXT PRIMARY KEY,
    vm_name TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'booting',
    harness TEXT NOT NULL,
    repo_url TEXT NOT NULL,
    branch TEXT NOT NULL,
    task TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    agent_name TEXT NOT NULL DEFAULT '',
    workspace_path TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS run_reports (
    report_id     TEXT PRIMARY KEY,
    agent_id      TEXT NOT NULL,
    request_id    TEXT NOT NULL DEFAULT '',
    exit_status   TEXT NOT NULL,
    commit_hash   TEXT NOT NULL DEFAULT '',
    diff_stat     TEXT NOT NULL DEFAULT '',
    stdout_tail   TEXT NOT NULL DEFAULT '',
    stderr_tail   TEXT NOT NULL DEFAULT '',
    metadata_json TEXT NOT NULL DEFAULT '{}',
    created_at    TEXT NOT NULL
);
";

/// (agent_id, experiment, harness, status, task, started, finished, report exit status)
type Session = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
);

const SESSIONS: &[Session] = &[
    (
        "ag-01",
        "nanogpt",
        "claude-code",
        "stopped",
        "tune the learning-rate warmup",
        "2026-04-10T09:00:00+00:00",
        Some("2026-04-10T09:06:12+00:00"),
        Some("completed"),
    ),
    (
        "ag-02",
        "nanogpt",
        "codex",
        "stopped",
        "try rotary embeddings",
        "2026-04-10T09:00:05+00:00",
        Some("2026-04-10T09:07:40+00:00"),
        Some("completed"),
    ),
    (
        "ag-03",
        "nanogpt",
        "claude-code",
        "crashed",
        "fuse the attention kernels",
        "2026-04-10T09:07:00+00:00",
        Some("2026-04-10T09:08:02+00:00"),
        Some("crashed"),
    ),
    (
        "ag-04",
        "nanogpt",
        "opencode",
        "stopped",
        "halve the batch, double the steps",
        "2026-04-10T09:08:30+00:00",
        Some("2026-04-10T09:40:30+00:00"),
        Some("timed_out"),
    ),
    (
        "ag-05",
        "tsp",
        "claude-code",
        "stopped",
        "or-opt moves",
        "2026-04-10T10:00:00+00:00",
        Some("2026-04-10T10:03:10+00:00"),
        Some("completed"),
    ),
    (
        "ag-06",
        "tsp",
        "codex",
        "running",
        "Lin-Kernighan moves",
        "2026-04-10T10:05:00+00:00",
        None,
        None,
    ),
];

/// Writes the state.db at `path` (replacing one that is there).
pub fn create(path: &Path) -> anyhow::Result<()> {
    if path.exists() {
        std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
    }
    let db = Connection::open(path).with_context(|| format!("creating {}", path.display()))?;
    db.execute_batch(SCHEMA)
        .with_context(|| format!("creating the runner schema in {}", path.display()))?;
    for (i, (id, exp, harness, status, task, started, finished, report)) in
        SESSIONS.iter().enumerate()
    {
        db.execute(
            "INSERT INTO agents (agent_id, vm_name, status, harness, repo_url, branch, task,
                                 started_at, finished_at, agent_name, workspace_path)
             VALUES (?1, ?2, ?3, ?4, ?5, 'main', ?6, ?7, ?8, ?9, ?10)",
            params![
                id,
                format!("vm-{}", i % 3 + 1),
                status,
                harness,
                format!("https://git.example.invalid/lab/{exp}.git"),
                task,
                started,
                finished,
                format!("{exp}-{harness}"),
                format!("/srv/work/{id}"),
            ],
        )
        .with_context(|| format!("inserting agent {id} into {}", path.display()))?;
        if let (Some(exit), Some(at)) = (report, finished) {
            db.execute(
                "INSERT INTO run_reports (report_id, agent_id, exit_status, commit_hash,
                                          diff_stat, stdout_tail, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    format!("rep-{id}"),
                    id,
                    exit,
                    fake_commit(i as u64),
                    " train.py | 12 ++++++------",
                    format!("{task}: done"),
                    at,
                ],
            )
            .with_context(|| format!("inserting the report of {id} into {}", path.display()))?;
        }
    }
    Ok(())
}

/// A 40-hex-digit commit-like id, different for each session.
fn fake_commit(i: u64) -> String {
    let a = (i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let b = a.rotate_left(29) ^ 0xbf58_476d_1ce4_e5b9;
    format!("{a:016x}{b:016x}{:08x}", (a ^ b) as u32)
}
