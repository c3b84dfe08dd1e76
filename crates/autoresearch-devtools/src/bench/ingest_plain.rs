//! `cargo xtask bench ingest --state-db PATH --plain [--reps K]`: a plain
//! ingest of a runner's `state.db` into a durable redb file, written the
//! straightforward way with the libraries the ledger is built on, to set
//! the engine's first sync against on the same machine at the same time.
//!
//! Each repetition, on a fresh redb file opened in the ledger's
//! multi-process mode (the same kind of durable commit as
//! `RedbConfig::default()`): rusqlite reads the eleven columns of the
//! `agents` table in rowid order into owned strings, each row is encoded
//! with postcard into one table keyed by its row number, and the
//! transaction is committed durably. Nothing else: no component model, no
//! tick record, no current state, no run_id index, no series, no check of
//! the rows. It is not a lower bound: the engine reads the file's pages
//! faster than rusqlite's row API, and commits one compressed record where
//! this commits a key per row.
//!
//! One line per repetition (`"bench": "ingest_plain"`: `ms` from the
//! query's preparation to the end of the commit, split into `read_ms`,
//! `insert_ms` and `commit_ms`; the process's `cpu_ms` and minor
//! `page_faults` over the same span), then the median and best.

use super::emit;
use super::ingest::ms;
use anyhow::{Context, Result, ensure};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

/// The `agents` columns a runner's `state.db` holds, in the order read.
const COLUMNS: &str = "agent_id, vm_name, status, harness, repo_url, branch, task, \
    started_at, finished_at, agent_name, workspace_path";

/// One row as read: ten text columns and the nullable `finished_at`.
type Row = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    String,
);

/// The times of one repetition.
struct Plain {
    rows: usize,
    read: Duration,
    insert: Duration,
    commit: Duration,
    cpu: Duration,
    faults: u64,
}

/// Runs `reps` repetitions on `db` (a runner `state.db`), each into a new
/// redb file in a temporary directory.
pub fn run(db: &Path, reps: usize) -> Result<()> {
    ensure!(
        db.is_file(),
        "bench ingest --plain: no runner file at {}",
        db.display()
    );
    let mut walls = Vec::with_capacity(reps);
    for rep in 0..reps {
        let dir = tempfile::tempdir().context("creating the plain ingest's directory")?;
        let f = once(db, &dir.path().join("plain.redb"))?;
        let wall = f.read + f.insert + f.commit;
        emit(json!({
            "bench": "ingest_plain", "rep": rep, "runs": f.rows, "ms": ms(wall),
            "read_ms": ms(f.read), "insert_ms": ms(f.insert), "commit_ms": ms(f.commit),
            "cpu_ms": ms(f.cpu), "page_faults": f.faults,
        }));
        walls.push(wall);
    }
    walls.sort();
    emit(json!({
        "bench": "ingest_plain", "file": db.display().to_string(), "reps": reps,
        "median_ms": ms(walls[walls.len() / 2]), "best_ms": ms(walls[0]),
    }));
    Ok(())
}

fn once(db: &Path, out: &Path) -> Result<Plain> {
    const RUNS: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("runs");
    let ledger = redb::Database::builder()
        .set_concurrency_mode(redb::ConcurrencyMode::MultiWriter)
        .create(out)
        .with_context(|| format!("creating {}", out.display()))?;
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("opening {}", db.display()))?;
    let ((cpu0, faults0), start) = (super::ingest::usage(), Instant::now());
    let mut query = conn
        .prepare(&format!("SELECT {COLUMNS} FROM agents"))
        .with_context(|| format!("reading the agents table of {}", db.display()))?;
    let rows: Vec<Row> = query
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
                r.get(9)?,
                r.get(10)?,
            ))
        })?
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading the agents rows of {}", db.display()))?;
    let read = start.elapsed();
    let txn = ledger.begin_write()?;
    {
        let mut table = txn.open_table(RUNS)?;
        let mut buf = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            buf.clear();
            buf = postcard::to_extend(row, buf).context("encoding a row")?;
            table.insert(i as u64 + 1, buf.as_slice())?;
        }
    }
    let inserted = start.elapsed();
    txn.commit()
        .with_context(|| format!("committing {}", out.display()))?;
    let committed = start.elapsed();
    let (cpu1, faults1) = super::ingest::usage();
    Ok(Plain {
        rows: rows.len(),
        read,
        insert: inserted - read,
        commit: committed - inserted,
        cpu: cpu1.saturating_sub(cpu0),
        faults: faults1.saturating_sub(faults0),
    })
}
