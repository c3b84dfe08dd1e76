//! The index a new ingester loads from `RunnerConfig::cache_dir`: whether it
//! is valid, stale (another writer appended), corrupt, missing or for another
//! setting, every sync writes exactly what an ingester that read the whole
//! world writes.

mod common;

use autoresearch_core::{
    ComponentRegistry, Run, State, Storage, Tick, World, WorldId, ledger as log,
};
use autoresearch_runner::RunReport;
use autoresearch_runner::{RunnerConfig, RunnerIngest, SyncReport};
use autoresearch_test_support::statedb::*;
use common::ledger;
use std::path::Path;
use std::sync::Arc;

const T0: &str = "2026-04-10T12:00:00+00:00";

/// What happens to the saved index before a sync.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Index {
    /// Left as the last sync saved it.
    Kept,
    /// Deleted.
    Missing,
    /// One byte in the middle flipped.
    Corrupt,
    /// Cut short.
    Truncated,
    /// Replaced by garbage of the same length.
    Garbage,
}

/// The ledger states after each step, the reports, and where each sync's
/// index came from.
type Outcome = (
    Vec<State>,
    Vec<(Option<u64>, usize, usize, usize, usize, usize)>,
    Vec<&'static str>,
);

fn counts(r: &SyncReport) -> (Option<u64>, usize, usize, usize, usize, usize) {
    (
        r.tick,
        r.rows_read,
        r.runs_added,
        r.runs_changed,
        r.reports_attached,
        r.runs_missing,
    )
}

fn damage(dir: &Path, how: Index) {
    for f in std::fs::read_dir(dir).unwrap() {
        let p = f.unwrap().path();
        let mut bytes = std::fs::read(&p).unwrap();
        match how {
            Index::Kept => {}
            Index::Missing => std::fs::remove_file(&p).unwrap(),
            Index::Corrupt => {
                let mid = bytes.len() / 2;
                bytes[mid] ^= 0x40;
                std::fs::write(&p, bytes).unwrap();
            }
            Index::Truncated => std::fs::write(&p, &bytes[..bytes.len() / 3]).unwrap(),
            Index::Garbage => std::fs::write(&p, vec![0xa5; bytes.len()]).unwrap(),
        }
    }
}

/// What another writer does to the world between two syncs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Other {
    Nobody,
    /// Sets a run's status (followed by replaying the tick).
    ChangesRun,
    /// Removes a run's report (not followed: the world is read).
    RemovesReport,
}

/// Runs the same lifecycle of a runner file through new ingesters (one per
/// sync, as separate processes), with the saved index treated as `how`
/// before each sync, or with no cache dir at all (`None`).
async fn lifecycle(how: Option<Index>, other: Other) -> Outcome {
    let db = db(&[AGENTS, REPORTS]);
    let cache = tempfile::tempdir().unwrap();
    let (storage, registry) = ledger();
    let mut config = RunnerConfig::new(&db.path);
    config.cache_dir = how.map(|_| cache.path().to_path_buf());
    let mut states = Vec::new();
    let mut reports = Vec::new();
    let mut sources = Vec::new();
    let sync = async |storage: &Arc<dyn Storage>, registry: &Arc<ComponentRegistry>| {
        if let Some(how) = how {
            damage(cache.path(), how);
        }
        let mut ingest = RunnerIngest::new(storage.clone(), registry.clone(), config.clone());
        let report = ingest.sync().await.unwrap();
        let info = storage.find_world("runner-fleet").await.unwrap().unwrap();
        let state = log::state_at(storage.as_ref(), info.id, info.head)
            .await
            .unwrap();
        (counts(&report), state, report.index)
    };
    let mut step = async |db: &Db| {
        let _ = db;
        let (c, s, i) = sync(&storage, &registry).await;
        reports.push(c);
        states.push(s);
        sources.push(i);
    };
    for i in 0..20 {
        db.agent(&format!("a{i:02}"), "booting", T0, "e-claude-code");
    }
    step(&db).await;
    db.set("a03", "status", Some("running"));
    db.set("a07", "status", Some("running"));
    step(&db).await;
    if other == Other::ChangesRun {
        // Another writer sets a run's status in the ledger; the file still
        // says `running`, so the next sync must write `running` back.
        let mut w = World::open(storage.clone(), registry.clone(), "runner-fleet")
            .await
            .unwrap();
        let (e, mut run) = w.run_by_id("a03").unwrap();
        run.status = "stopped-by-hand".into();
        w.insert(e, &run).unwrap();
        // And adds a run the file does not have (counted as missing).
        w.spawn_with(&Run::new("by-hand", "e")).unwrap();
        w.commit().await.unwrap();
    }
    db.set("a07", "status", Some("stopped"));
    db.set("a07", "finished_at", Some("2026-04-10T12:30:00Z"));
    db.report("r1", "a07", "c0ffee1", "2026-04-10T12:31:00Z");
    step(&db).await;
    // Unchanged file.
    step(&db).await;
    if other == Other::RemovesReport {
        let mut w = World::open(storage.clone(), registry.clone(), "runner-fleet")
            .await
            .unwrap();
        let (e, _) = w.run_by_id("a07").unwrap();
        w.remove::<RunReport>(e).unwrap();
        w.commit().await.unwrap();
    }
    // A row deleted and inserted again gets a new rowid; one disappears.
    db.conn
        .execute_batch(
            "INSERT OR REPLACE INTO agents SELECT agent_id, vm_name, 'crashed', harness, repo_url,
             branch, task, started_at, finished_at, agent_name, workspace_path
             FROM agents WHERE agent_id = 'a01';
             DELETE FROM agents WHERE agent_id = 'a02';",
        )
        .unwrap();
    db.agent("a99", "booting", T0, "e-claude-code");
    step(&db).await;
    // VACUUM may renumber rowids of a table without an INTEGER PRIMARY KEY.
    db.conn.execute_batch("VACUUM").unwrap();
    db.set("a05", "task", Some("a new task"));
    step(&db).await;
    (states, reports, sources)
}

#[tokio::test]
async fn every_saved_index_state_gives_the_same_ledger() {
    for other in [Other::Nobody, Other::ChangesRun, Other::RemovesReport] {
        let reference = lifecycle(None, other).await;
        assert_eq!(reference.0.len(), 6);
        assert_eq!(
            reference.2,
            ["new", "world", "world", "world", "world", "world"]
        );
        let extra = usize::from(other == Other::ChangesRun);
        assert_eq!(reference.0.last().unwrap().entities.len(), 21 + extra);
        // The removed report was written again from the file.
        let attached: Vec<usize> = reference.1.iter().map(|c| c.4).collect();
        let again = usize::from(other == Other::RemovesReport);
        assert_eq!(attached, [0, 0, 1, 0, again, 0], "{other:?}");
        let missing = reference.1.last().unwrap().5;
        assert_eq!(missing, 1 + usize::from(other == Other::ChangesRun));
        if other == Other::ChangesRun {
            // The hand-made change was overwritten by the file's value.
            let s = &reference.0[2];
            let runs: Vec<Run> = s
                .entities
                .values()
                .filter_map(|c| c.get("Run"))
                .map(|b| {
                    autoresearch_runner::registry()
                        .decode::<Run>(WorldId(0), b)
                        .unwrap()
                })
                .collect();
            assert!(
                runs.iter()
                    .any(|r| r.run_id == "a03" && r.status == "running")
            );
        }
        for how in [
            Index::Kept,
            Index::Missing,
            Index::Corrupt,
            Index::Truncated,
            Index::Garbage,
        ] {
            let got = lifecycle(Some(how), other).await;
            assert_eq!(got.1, reference.1, "{how:?} {other:?}");
            assert!(got.0 == reference.0, "{how:?} {other:?}");
            // The saved index is used exactly when it is intact and every
            // tick since can be replayed onto it.
            let mut expect = vec!["new"];
            for step in 1..6 {
                let unfollowable = other == Other::RemovesReport && step == 4;
                expect.push(if how == Index::Kept && !unfollowable {
                    "saved"
                } else {
                    "world"
                });
            }
            assert_eq!(got.2, expect, "{how:?} {other:?}");
        }
    }
}

/// A warm ingester, one loading a saved index, and one reading the whole
/// world agree step by step with the same file changes.
#[tokio::test]
async fn warm_cold_and_saved_index_agree() {
    let db = db(&[AGENTS, REPORTS]);
    let cache = tempfile::tempdir().unwrap();
    let ledgers: Vec<_> = (0..3).map(|_| ledger()).collect();
    let mut warm = RunnerIngest::new(
        ledgers[0].0.clone(),
        ledgers[0].1.clone(),
        RunnerConfig::new(&db.path),
    );
    let saved = |s: &Arc<dyn Storage>, r: &Arc<ComponentRegistry>| {
        let mut c = RunnerConfig::new(&db.path);
        c.cache_dir = Some(cache.path().to_path_buf());
        RunnerIngest::new(s.clone(), r.clone(), c)
    };
    for i in 0..10 {
        db.agent(&format!("a{i}"), "booting", T0, "e-opencode");
    }
    for round in 0..6 {
        if round > 0 {
            db.set(&format!("a{round}"), "status", Some("running"));
        }
        if round == 3 {
            db.report("r3", "a3", "abc0003", "2026-04-10T12:31:00Z");
        }
        if round == 4 {
            // Only the report changes: its row must be read again.
            db.conn
                .execute("UPDATE run_reports SET commit_hash = 'abc0004'", [])
                .unwrap();
        }
        let a = warm.sync().await.unwrap();
        let b = saved(&ledgers[1].0, &ledgers[1].1).sync().await.unwrap();
        let c = RunnerIngest::new(
            ledgers[2].0.clone(),
            ledgers[2].1.clone(),
            RunnerConfig::new(&db.path),
        )
        .sync()
        .await
        .unwrap();
        assert_eq!(counts(&a), counts(&b), "round {round}");
        assert_eq!(counts(&a), counts(&c), "round {round}");
        if round > 0 {
            assert_eq!((a.index, b.index, c.index), ("kept", "saved", "world"));
        }
    }
    let mut states = Vec::new();
    for (s, _) in &ledgers {
        let info = s.find_world("runner-fleet").await.unwrap().unwrap();
        assert_eq!(info.head, Tick(6));
        states.push(log::state_at(s.as_ref(), info.id, info.head).await.unwrap());
    }
    assert!(states[0] == states[1] && states[1] == states[2]);
}

/// An index saved with another --experiment setting is not used: the runs
/// are re-built with the new setting and written.
#[tokio::test]
async fn an_index_for_another_experiment_setting_is_not_used() {
    let db = db(&[AGENTS]);
    let cache = tempfile::tempdir().unwrap();
    db.agent("a1", "stopped", T0, "e-claude-code");
    let (storage, registry) = ledger();
    let mut config = RunnerConfig::new(&db.path);
    config.cache_dir = Some(cache.path().to_path_buf());
    let first = RunnerIngest::new(storage.clone(), registry.clone(), config.clone())
        .sync()
        .await
        .unwrap();
    assert_eq!(first.runs_added, 1);
    config.experiment = Some("other".into());
    let second = RunnerIngest::new(storage.clone(), registry.clone(), config)
        .sync()
        .await
        .unwrap();
    assert_eq!((second.tick, second.runs_changed), (Some(2), 1));
    assert_eq!(second.index, "world");
    let w = World::open(storage, registry, "runner-fleet")
        .await
        .unwrap();
    assert_eq!(w.run_by_id("a1").unwrap().1.experiment_name, "other");
}

/// A warm sync of a file nobody wrote since reads nothing, and reports what
/// a full read would: the same rows, missing runs and scan warnings.
#[tokio::test]
async fn an_unchanged_file_reports_what_a_full_read_would() {
    let db = db(&[AGENTS_NULLABLE, REPORTS]);
    db.agent("a1", "stopped", T0, "e-claude-code");
    db.agent("b1", "stopped", T0, "e-claude-code");
    db.conn
        .execute("INSERT INTO agents (agent_id) VALUES (NULL)", [])
        .unwrap();
    db.report("r9", "ghost", "fff0000", T0);
    let (storage, registry) = ledger();
    let mut warm = RunnerIngest::new(
        storage.clone(),
        registry.clone(),
        RunnerConfig::new(&db.path),
    );
    warm.sync().await.unwrap();
    db.conn
        .execute("DELETE FROM agents WHERE agent_id = 'b1'", [])
        .unwrap();
    let full = warm.sync().await.unwrap();
    assert_eq!((full.rows_read, full.runs_missing), (2, 1));
    let idle = warm.sync().await.unwrap();
    assert_eq!(idle.index, "kept");
    let fresh = RunnerIngest::new(storage, registry, RunnerConfig::new(&db.path))
        .sync()
        .await
        .unwrap();
    for r in [&idle, &fresh] {
        assert_eq!(counts(r), (None, 2, 0, 0, 0, 1));
        assert_eq!((r.orphan_reports, r.warnings_total), (1, 2));
        assert_eq!(r.warnings, full.warnings);
    }
}

/// A read that fails (the database locked) writes nothing and leaves a warm
/// ingester's index in place: the next sync starts from it.
#[tokio::test]
async fn a_failed_read_keeps_the_warm_index() {
    // Rollback-journal mode: an exclusive writer blocks readers.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let writer = rusqlite::Connection::open(&path).unwrap();
    writer.execute_batch(AGENTS).unwrap();
    writer
        .execute_batch(
            "INSERT INTO agents VALUES ('a1','v','running','h','r','main','t','2026-04-10T12:00:00Z',NULL,'','')",
        )
        .unwrap();
    let (storage, registry) = ledger();
    let mut warm = RunnerIngest::new(storage.clone(), registry, RunnerConfig::new(&path));
    assert_eq!(warm.sync().await.unwrap().runs_added, 1);
    writer
        .execute_batch("BEGIN EXCLUSIVE; UPDATE agents SET status = 'stopped';")
        .unwrap();
    let err = warm.sync().await.unwrap_err();
    assert!(
        matches!(err, autoresearch_runner::IngestError::Locked { .. }),
        "{err:?}"
    );
    writer.execute_batch("COMMIT").unwrap();
    let next = warm.sync().await.unwrap();
    assert_eq!(next.index, "kept");
    assert_eq!(counts(&next), (Some(2), 1, 0, 1, 0, 0));
}

/// An agents row whose agent_id is empty text names no run: it is skipped
/// with a warning, as a NULL one, by the page read and the row read alike.
#[tokio::test]
async fn an_empty_agent_id_is_skipped_with_a_warning() {
    let db = db(&[AGENTS_NULLABLE, REPORTS]);
    db.agent("a1", "stopped", T0, "e-claude-code");
    db.conn
        .execute(
            "INSERT INTO agents (agent_id, status) VALUES ('', 'running')",
            [],
        )
        .unwrap();
    let (storage, registry) = ledger();
    let r = RunnerIngest::new(
        storage.clone(),
        registry.clone(),
        RunnerConfig::new(&db.path),
    )
    .sync()
    .await
    .unwrap();
    assert_eq!(r.runs_added, 1, "{r:?}");
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("agents row 2 has no text agent_id")),
        "{r:?}"
    );
    let w = World::open(storage, registry, "runner-fleet")
        .await
        .unwrap();
    assert!(w.run_by_id("").is_none(), "no run with an empty id");
}
