//! Helpers shared by the CLI's test files (each file is a crate of its own
//! and takes this with `mod common;`).

use autoresearch_core::{ComponentRegistry, World};
use autoresearch_store::{RedbConfig, RedbStorage};
use std::path::Path;
use std::sync::Arc;

/// The world `autoresearch:exp` of the ledger a loop run in `dir` wrote
/// (`dir/.autoresearch/ledger.redb`), opened read-write with the standard
/// registry. Panics when it cannot be opened: a test's fixture is broken.
#[allow(
    dead_code,
    reason = "each test file is its own crate and uses some of these helpers"
)]
pub async fn exp_world(dir: &Path) -> World {
    let path = dir.join(".autoresearch/ledger.redb");
    let storage = Arc::new(RedbStorage::open(&path, RedbConfig::default()).unwrap());
    World::open(
        storage,
        Arc::new(ComponentRegistry::standard()),
        "autoresearch:exp",
    )
    .await
    .unwrap()
}

/// The current-state tables of ledger format 4.
#[allow(
    dead_code,
    reason = "each test file is its own crate and uses some of these helpers"
)]
pub const CURRENT_TABLES: [&str; 5] = [
    "current_ticks",
    "current_index",
    "current_pending",
    "current_tally",
    "current_head",
];

/// The chart-series tables.
#[allow(
    dead_code,
    reason = "each test file is its own crate and uses some of these helpers"
)]
pub const SERIES_TABLES: [&str; 5] = [
    "series_head",
    "series_points",
    "series_crashed",
    "series_runs",
    "series_results",
];

/// Copies the ledger at `from` to `to` and deletes `tables` from the copy:
/// what a ledger written before them holds. Panics when one is missing
/// (the ledger was not written by this build).
#[allow(
    dead_code,
    reason = "each test file is its own crate and uses some of these helpers"
)]
pub fn copy_without_tables(from: &Path, to: &Path, tables: &[&str]) {
    std::fs::copy(from, to).unwrap();
    let db = redb::Database::create(to).unwrap();
    let txn = db.begin_write().unwrap();
    for name in tables {
        assert!(
            txn.delete_table(redb::TableDefinition::<u64, u64>::new(name))
                .unwrap(),
            "{name} was missing from the ledger written by this build"
        );
    }
    txn.commit().unwrap();
}

/// Runs `autoresearch --ledger LEDGER ARGS...` in `cwd` (without
/// `RUST_LOG`, so its output is the user's) and gives its stdout and
/// stderr. Panics when it fails: the test's command was expected to work.
#[allow(
    dead_code,
    reason = "each test file is its own crate and uses some of these helpers"
)]
pub fn run_on_ledger(ledger: &Path, cwd: &Path, args: &[&str]) -> (String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_autoresearch"))
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .arg("--ledger")
        .arg(ledger)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}
