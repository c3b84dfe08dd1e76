//! `cargo xtask bench ingest [--quick]`: the runner ingest's first sync of a
//! state.db with 100,000 agents rows, and a re-sync after 1% of them changed.
//!
//! Each figure is measured against both the in-memory reference ledger and
//! the redb ledger (default config: durable). The re-sync is measured warm
//! (the same ingester, as `ingest runner --watch` keeps it: only rows whose
//! fingerprint changed are materialized) and cold (a new ingester, as a new
//! `ingest runner` process: the world is materialized and every row compared).

use super::emit;
use anyhow::{Context, Result, ensure};
use autoresearch_core::{MemoryStorage, Storage};
use autoresearch_runner::{RunnerConfig, RunnerIngest};
use autoresearch_store::{RedbConfig, RedbStorage};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// Writes a WAL-mode state.db with `rows` agents rows.
fn make_state_db(path: &Path, rows: usize) -> Result<()> {
    let mut conn = rusqlite::Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "wal")?;
    conn.execute_batch(
        "CREATE TABLE agents (
            agent_id TEXT PRIMARY KEY, vm_name TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'booting', harness TEXT NOT NULL,
            repo_url TEXT NOT NULL, branch TEXT NOT NULL, task TEXT NOT NULL,
            started_at TEXT NOT NULL, finished_at TEXT,
            agent_name TEXT NOT NULL DEFAULT '', workspace_path TEXT NOT NULL DEFAULT '')",
    )?;
    let tx = conn.transaction()?;
    {
        let mut stmt =
            tx.prepare("INSERT INTO agents VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)")?;
        for i in 0..rows {
            let harness = ["claude-code", "opencode", "hermes"][i % 3];
            let done = i % 4 != 0;
            let started = format!(
                "2026-04-{:02}T{:02}:{:02}:{:02}+00:00",
                1 + i % 28,
                i % 24,
                i % 60,
                (i / 60) % 60
            );
            let finished = done.then(|| format!("2026-04-{:02}T23:59:00.250Z", 1 + i % 28));
            stmt.execute(rusqlite::params![
                format!("agent-{i:08}"),
                format!("vm-{}", i % 64),
                if done { "stopped" } else { "running" },
                harness,
                "git@example.invalid:team/nanogpt.git",
                "main",
                format!("try idea #{i}: tune the learning-rate schedule and measure val_bpb"),
                started,
                finished,
                format!("exp{}-{harness}", i % 10),
                format!("/var/lib/runner/ws/{i}"),
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Changes 1% of the rows (every 100th, starting at `offset`): the
/// runner finishing sessions.
fn change_rows(path: &Path, rows: usize, offset: usize) -> Result<usize> {
    let conn = rusqlite::Connection::open(path)?;
    let step = 100;
    let changed = conn.execute(
        "UPDATE agents SET status = 'crashed', finished_at = '2026-05-01T00:00:00Z'
         WHERE (CAST(substr(agent_id, 7) AS INTEGER) % ?1) = ?2",
        rusqlite::params![step as i64, offset as i64],
    )?;
    ensure!(
        changed == rows.div_ceil(step) || changed + 1 == rows.div_ceil(step),
        "changed {changed} rows"
    );
    Ok(changed)
}

async fn one_backend(name: &str, storage: Arc<dyn Storage>, db: &Path, rows: usize) -> Result<()> {
    let registry = Arc::new(autoresearch_runner::registry());
    let config = RunnerConfig::new(db);
    let mut ingest = RunnerIngest::new(storage.clone(), registry.clone(), config.clone());
    let t = Instant::now();
    let first = ingest.sync().await.context("first sync")?;
    let first_s = t.elapsed().as_secs_f64();
    ensure!(
        first.runs_added == rows,
        "first sync added {}",
        first.runs_added
    );
    emit(json!({
        "bench": "ingest", "storage": name, "rows": rows,
        "ms": (first_s * 1000.0).round(),
        "rows_per_s": (rows as f64 / first_s).round(),
    }));

    for (mode, offset) in [("warm", 1), ("cold", 2)] {
        let changed = change_rows(db, rows, offset)?;
        if mode == "cold" {
            ingest = RunnerIngest::new(storage.clone(), registry.clone(), config.clone());
        }
        let t = Instant::now();
        let re = ingest.sync().await.context("re-sync")?;
        let s = t.elapsed().as_secs_f64();
        ensure!(
            re.runs_changed == changed && re.runs_added == 0,
            "re-sync: {re:?}"
        );
        emit(json!({
            "bench": "resync", "storage": name, "mode": mode, "rows": rows,
            "changed": changed, "ms": (s * 1000.0 * 10.0).round() / 10.0,
            "speedup": (first_s / s * 10.0).round() / 10.0,
        }));
    }
    Ok(())
}

pub fn run(quick: bool) -> Result<()> {
    let rows = if quick { 10_000 } else { 100_000 };
    let dir = tempfile::tempdir()?;
    let rt = tokio::runtime::Runtime::new()?;
    for backend in ["memory", "redb"] {
        let db = dir.path().join(format!("state-{backend}.db"));
        eprintln!("ingest: writing {rows} agents rows to {}", db.display());
        make_state_db(&db, rows)?;
        let storage: Arc<dyn Storage> = match backend {
            "memory" => Arc::new(MemoryStorage::default()),
            _ => Arc::new(
                RedbStorage::open(&dir.path().join("ledger.redb"), RedbConfig::default())
                    .context("opening the redb ledger")?,
            ),
        };
        rt.block_on(one_backend(backend, storage, &db, rows))?;
    }
    Ok(())
}
