//! Runner ingest against real state.db files: mapping, incremental syncs,
//! bad input, a concurrent WAL writer, a read-only directory.

mod common;

use autoresearch_core::{Change, Run, Tick, World};
use autoresearch_runner::{IngestError, RunReport, RunnerConfig, RunnerIngest, SyncReport};
use autoresearch_test_support::statedb::*;
use common::ledger;
use std::path::Path;
use std::sync::Arc;

const T0: &str = "2026-04-10T12:00:00+00:00";
const T0_MS: i64 = 1_775_822_400_000;

fn ingester(
    storage: &Arc<dyn autoresearch_core::Storage>,
    registry: &Arc<autoresearch_core::ComponentRegistry>,
    path: &Path,
) -> RunnerIngest {
    RunnerIngest::new(storage.clone(), registry.clone(), RunnerConfig::new(path))
}

async fn world(
    storage: &Arc<dyn autoresearch_core::Storage>,
    registry: &Arc<autoresearch_core::ComponentRegistry>,
) -> World {
    World::open(storage.clone(), registry.clone(), "runner-fleet")
        .await
        .unwrap()
}

fn counts(r: &SyncReport) -> (Option<u64>, usize, usize, usize, usize) {
    (
        r.tick,
        r.rows_read,
        r.runs_added,
        r.runs_changed,
        r.reports_attached,
    )
}

#[tokio::test]
async fn first_sync_maps_rows_runs_and_reports() {
    let db = db(&[AGENTS, REPORTS]);
    db.agent("a1", "stopped", T0, "nanogpt-claude-code");
    db.agent("a2", "running", "2026-04-10T11:00:00Z", "freeform");
    db.agent("a3", "booting", "2026-04-10 13:00:00", "claude-code");
    db.report("r1", "a1", "abc1234", "2026-04-10T12:30:00Z");
    db.report("r0", "a1", "old0000", "2026-04-10T12:10:00Z");
    db.report("r9", "ghost", "fff0000", "2026-04-10T12:10:00Z");
    let (storage, registry) = ledger();
    let report = ingester(&storage, &registry, &db.path)
        .sync()
        .await
        .unwrap();
    assert_eq!(counts(&report), (Some(1), 3, 3, 0, 1));
    assert_eq!(report.orphan_reports, 1);
    assert_eq!(report.timestamps_without_offset, 1);
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("r9") && w.contains("ghost")),
        "{:?}",
        report.warnings
    );

    let w = world(&storage, &registry).await;
    let runs: Vec<Run> = w
        .find_all::<Run>(|_| true)
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    // Spawned in start order.
    let ids: Vec<&str> = runs.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(ids, ["a2", "a1", "a3"]);
    let (e1, a1) = w.run_by_id("a1").unwrap();
    assert_eq!(a1.experiment_name, "nanogpt");
    assert_eq!(a1.commit_hash, "abc1234", "the latest report wins");
    assert_eq!(a1.started_at_ms, T0_MS);
    assert_eq!(a1.finished_at_ms, 0);
    assert_eq!(a1.vm_name, "vm-1");
    assert_eq!(a1.workspace_path, "/ws/1");
    let rep = w.get::<RunReport>(e1).unwrap();
    assert_eq!(rep.report_id, "r1");
    assert_eq!(rep.exit_status, "completed");
    assert_eq!(rep.metadata_json, "{}");
    assert_eq!(w.run_by_id("a2").unwrap().1.experiment_name, "adhoc");
    // "claude-code" alone has no experiment before the harness.
    assert_eq!(w.run_by_id("a3").unwrap().1.experiment_name, "adhoc");
    assert_eq!(
        w.run_by_id("a3").unwrap().1.started_at_ms,
        T0_MS + 3_600_000
    );
}

#[tokio::test]
async fn experiment_flag_overrides_the_agent_name() {
    let db = db(&[AGENTS]);
    db.agent("a1", "running", T0, "nanogpt-claude-code");
    let (storage, registry) = ledger();
    let mut config = RunnerConfig::new(&db.path);
    config.experiment = Some("fleet-x".into());
    config.world = "w2".into();
    let mut ingest = RunnerIngest::new(storage.clone(), registry.clone(), config);
    ingest.sync().await.unwrap();
    let w = World::open(storage, registry, "w2").await.unwrap();
    assert_eq!(w.run_by_id("a1").unwrap().1.experiment_name, "fleet-x");
}

#[tokio::test]
async fn nulls_take_the_reference_defaults() {
    let db = db(&[AGENTS_NULLABLE]);
    db.conn
        .execute("INSERT INTO agents (agent_id) VALUES ('n1')", [])
        .unwrap();
    let (storage, registry) = ledger();
    let report = ingester(&storage, &registry, &db.path)
        .sync()
        .await
        .unwrap();
    assert_eq!(report.runs_added, 1);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let run = world(&storage, &registry).await.run_by_id("n1").unwrap().1;
    let expected = Run {
        run_id: "n1".into(),
        status: "booting".into(),
        branch: "main".into(),
        ..Run::default()
    };
    assert_eq!(run, expected);
}

/// One row per case: started_at text -> (ms, naive count, warning expected).
#[tokio::test]
async fn timestamps_are_parsed_counted_and_reported() {
    let cases: &[(Option<&str>, i64, usize, bool)] = &[
        (Some(T0), T0_MS, 0, false),
        (Some("2026-04-10T12:00:00Z"), T0_MS, 0, false),
        (Some("2026-04-10T12:00:00.5Z"), T0_MS + 500, 0, false),
        (Some("2026-04-10T14:00:00.250+02:00"), T0_MS + 250, 0, false),
        (Some("2026-04-10T12:00:00"), T0_MS, 1, false),
        (Some("2026-04-10 12:00:00.125"), T0_MS + 125, 1, false),
        (None, 0, 0, false),
        (Some(""), 0, 0, false),
        (Some("last tuesday"), 0, 0, true),
    ];
    for (i, (text, ms, naive, warn)) in cases.iter().enumerate() {
        let db = db(&[AGENTS_NULLABLE]);
        db.conn
            .execute(
                "INSERT INTO agents (agent_id, started_at) VALUES (?1, ?2)",
                rusqlite::params![format!("t{i}"), text],
            )
            .unwrap();
        let (storage, registry) = ledger();
        let report = ingester(&storage, &registry, &db.path)
            .sync()
            .await
            .unwrap();
        let run = world(&storage, &registry)
            .await
            .run_by_id(&format!("t{i}"))
            .unwrap()
            .1;
        assert_eq!(run.started_at_ms, *ms, "case {text:?}");
        assert_eq!(report.timestamps_without_offset, *naive, "case {text:?}");
        let warned = report
            .warnings
            .iter()
            .any(|w| w.contains(&format!("t{i}")) && w.contains("started_at"));
        assert_eq!(warned, *warn, "case {text:?}: {:?}", report.warnings);
    }
}

#[tokio::test]
async fn syncing_twice_adds_nothing_warm_or_cold() {
    let db = db(&[AGENTS, REPORTS]);
    db.agent("a1", "stopped", T0, "e-claude-code");
    db.report("r1", "a1", "abc1234", T0);
    let (storage, registry) = ledger();
    let mut warm = ingester(&storage, &registry, &db.path);
    assert_eq!(warm.sync().await.unwrap().tick, Some(1));
    let again = warm.sync().await.unwrap();
    assert_eq!(counts(&again), (None, 1, 0, 0, 0));
    let cold = ingester(&storage, &registry, &db.path)
        .sync()
        .await
        .unwrap();
    assert_eq!(counts(&cold), (None, 1, 0, 0, 0));
    assert_eq!(
        storage
            .find_world("runner-fleet")
            .await
            .unwrap()
            .unwrap()
            .head,
        Tick(1)
    );
}

/// The runner moves a row through its lifecycle; every sync appends exactly
/// that transition as one tick, whether the ingester is warm or new.
#[tokio::test]
async fn each_sync_appends_exactly_the_transitions_seen() {
    for warm in [true, false] {
        let db = db(&[AGENTS, REPORTS]);
        db.agent("a1", "booting", T0, "e-opencode");
        db.agent("b1", "stopped", T0, "e-opencode");
        let (storage, registry) = ledger();
        let mut ingest = ingester(&storage, &registry, &db.path);
        let mut sync = async || {
            if !warm {
                ingest = ingester(&storage, &registry, &db.path);
            }
            ingest.sync().await.unwrap()
        };
        assert_eq!(counts(&sync().await), (Some(1), 2, 2, 0, 0));
        db.set("a1", "status", Some("running"));
        assert_eq!(counts(&sync().await), (Some(2), 2, 0, 1, 0));
        db.set("a1", "status", Some("stopped"));
        db.set("a1", "finished_at", Some("2026-04-10T12:30:00Z"));
        db.report("r1", "a1", "c0ffee1", "2026-04-10T12:31:00Z");
        assert_eq!(counts(&sync().await), (Some(3), 2, 0, 1, 1));
        // A later report supersedes; an older one arriving late does not.
        db.report("r2", "a1", "beef002", "2026-04-10T12:40:00Z");
        assert_eq!(counts(&sync().await), (Some(4), 2, 0, 1, 1));
        db.report("r0", "a1", "dead000", "2026-04-10T12:01:00Z");
        assert_eq!(counts(&sync().await), (None, 2, 0, 0, 0), "warm={warm}");
        // A row that disappears is kept and counted.
        db.conn
            .execute("DELETE FROM agents WHERE agent_id = 'b1'", [])
            .unwrap();
        let gone = sync().await;
        assert_eq!((gone.tick, gone.runs_missing), (None, 1), "warm={warm}");

        let w = world(&storage, &registry).await;
        assert!(w.run_by_id("b1").is_some());
        let (e, run) = w.run_by_id("a1").unwrap();
        assert_eq!(run.commit_hash, "beef002");
        let statuses: Vec<String> = w
            .history(e)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|c| match c.change {
                Change::Set {
                    component, value, ..
                } if component == "Run" => {
                    Some(registry.decode::<Run>(w.id(), &value).unwrap().status)
                }
                _ => None,
            })
            .collect();
        assert_eq!(statuses, ["booting", "running", "stopped", "stopped"]);
        // Time travel: at tick 2 the run was running.
        let at2 = World::open_at(storage.clone(), registry.clone(), w.id(), Tick(2))
            .await
            .unwrap();
        assert_eq!(at2.run_by_id("a1").unwrap().1.status, "running");
    }
}

/// Every bad input is a clear error and leaves the ledger without a world.
#[tokio::test]
async fn bad_input_is_a_clear_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.db");
    std::fs::write(
        &text,
        "this is not a database, it is a long enough text file ".repeat(40),
    )
    .unwrap();
    let no_agents = db(&["CREATE TABLE other (x TEXT)"]);
    let no_task = db(&[&AGENTS.replace("task TEXT NOT NULL,", "")]);
    let bad_reports = db(&[
        AGENTS,
        &REPORTS.replace("commit_hash   TEXT NOT NULL DEFAULT '',", ""),
    ]);
    let corrupt = db(&[AGENTS]);
    for i in 0..200 {
        corrupt.agent(&format!("c{i}"), "running", T0, "x");
    }
    corrupt
        .conn
        .pragma_update(None, "wal_checkpoint", "TRUNCATE")
        .unwrap();
    let mut bytes = std::fs::read(&corrupt.path).unwrap();
    for b in bytes.iter_mut().skip(4096).take(4096) {
        *b = 0xA5;
    }
    std::fs::write(&corrupt.path, &bytes).unwrap();

    let missing = dir.path().join("absent.db");
    type Case<'a> = (&'a Path, &'a str, fn(&IngestError) -> bool);
    let cases: Vec<Case> = vec![
        (&missing, "no such file", |e| {
            matches!(e, IngestError::Missing { .. })
        }),
        (&text, "not a SQLite database", |e| {
            matches!(e, IngestError::NotADatabase { .. })
        }),
        (&no_agents.path, "no `agents` table", |e| {
            matches!(e, IngestError::NoAgentsTable { .. })
        }),
        (&no_task.path, "table `agents` has no column `task`", |e| {
            matches!(e, IngestError::MissingColumn { column: "task", .. })
        }),
        (
            &bad_reports.path,
            "table `run_reports` has no column `commit_hash`",
            |e| {
                matches!(
                    e,
                    IngestError::MissingColumn {
                        table: "run_reports",
                        ..
                    }
                )
            },
        ),
        (&corrupt.path, "corrupt", |e| {
            matches!(e, IngestError::Corrupt { .. })
        }),
    ];
    for (path, message, is) in cases {
        let (storage, registry) = ledger();
        let err = ingester(&storage, &registry, path)
            .sync()
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(is(&err), "{path:?}: {err:?}");
        assert!(text.contains(message), "{path:?}: {text}");
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(storage.list_worlds().await.unwrap().is_empty(), "{path:?}");
    }
}

/// A failed sync after a good one leaves the world as it was.
#[tokio::test]
async fn a_failing_sync_leaves_the_world_unchanged() {
    let db = db(&[AGENTS]);
    db.agent("a1", "running", T0, "x");
    let (storage, registry) = ledger();
    let mut ingest = ingester(&storage, &registry, &db.path);
    ingest.sync().await.unwrap();
    db.conn
        .execute_batch("ALTER TABLE agents DROP COLUMN workspace_path")
        .unwrap();
    let err = ingest.sync().await.unwrap_err();
    assert!(
        matches!(
            err,
            IngestError::MissingColumn {
                column: "workspace_path",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        storage
            .find_world("runner-fleet")
            .await
            .unwrap()
            .unwrap()
            .head,
        Tick(1)
    );
}

#[tokio::test]
async fn a_locked_database_is_reported_as_locked() {
    // Rollback-journal mode: an exclusive writer blocks readers (WAL would not).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let writer = rusqlite::Connection::open(&path).unwrap();
    writer.execute_batch(AGENTS).unwrap();
    writer.execute_batch("BEGIN EXCLUSIVE; INSERT INTO agents VALUES ('a','v','running','h','r','main','t','2026-04-10T12:00:00Z',NULL,'','');").unwrap();
    let (storage, registry) = ledger();
    let err = ingester(&storage, &registry, &path)
        .sync()
        .await
        .unwrap_err();
    assert!(matches!(err, IngestError::Locked { .. }), "{err:?}");
    assert!(err.to_string().contains("locked"), "{err}");
    writer.execute_batch("COMMIT").unwrap();
    let ok = ingester(&storage, &registry, &path).sync().await.unwrap();
    assert_eq!(ok.runs_added, 1);
}

/// The runner commits batches of 10 rows while we sync: every sync sees a
/// whole number of batches (one consistent snapshot), and the last sync
/// catches up with everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wal_writer_committing_during_the_read() {
    let db = db(&[AGENTS, REPORTS]);
    let path = db.path.clone();
    let batches = 150;
    let writer = std::thread::spawn(move || {
        let mut conn = rusqlite::Connection::open(&path).unwrap();
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .unwrap();
        for b in 0..batches {
            let tx = conn.transaction().unwrap();
            for i in 0..10 {
                let id = format!("w{b}-{i}");
                tx.execute(
                    "INSERT INTO agents VALUES (?1,'vm','booting','h','r','main','t','2026-04-10T12:00:00Z',NULL,'','')",
                    [&id],
                )
                .unwrap();
                tx.execute(
                    "INSERT INTO run_reports (report_id, agent_id, exit_status, commit_hash, created_at) VALUES (?1, ?1, 'completed', 'abc', '2026-04-10T12:00:00Z')",
                    [&id],
                )
                .unwrap();
            }
            if b > 0 {
                tx.execute(
                    "UPDATE agents SET status = 'running' WHERE agent_id LIKE ?1",
                    [format!("w{}-%", b - 1)],
                )
                .unwrap();
            }
            tx.commit().unwrap();
        }
    });
    let (storage, registry) = ledger();
    let mut ingest = ingester(&storage, &registry, &db.path);
    let mut syncs = 0;
    loop {
        let done = writer.is_finished();
        let r = ingest.sync().await.unwrap();
        assert_eq!(r.rows_read % 10, 0, "a torn read: {r:?}");
        assert_eq!(
            r.rows_read, r.reports_read,
            "tables from different snapshots: {r:?}"
        );
        assert_eq!(r.orphan_reports, 0);
        syncs += 1;
        if done {
            assert_eq!(r.rows_read, batches * 10);
            break;
        }
    }
    writer.join().unwrap();
    let w = world(&storage, &registry).await;
    assert_eq!(w.find_all::<Run>(|_| true).len(), batches * 10);
    assert_eq!(w.find_all::<RunReport>(|_| true).len(), batches * 10);
    assert!(syncs >= 2, "the read never overlapped the writer");
}

/// Mounts `src` read-only at a new directory (as root), or makes it read-only
/// by mode (as any other user). Unmounts on drop.
struct ReadOnlyDir {
    path: std::path::PathBuf,
    mounted: bool,
    _mnt: tempfile::TempDir,
}

impl ReadOnlyDir {
    fn new(src: &Path) -> ReadOnlyDir {
        let mnt = tempfile::tempdir().unwrap();
        let is_root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .unwrap()
            .stdout
            == b"0\n";
        if is_root {
            let ok = std::process::Command::new("mount")
                .args(["--bind", "-o", "ro"])
                .arg(src)
                .arg(mnt.path())
                .status()
                .unwrap();
            assert!(ok.success(), "mount --bind -o ro failed");
            ReadOnlyDir {
                path: mnt.path().to_path_buf(),
                mounted: true,
                _mnt: mnt,
            }
        } else {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(src, std::fs::Permissions::from_mode(0o555)).unwrap();
            ReadOnlyDir {
                path: src.to_path_buf(),
                mounted: false,
                _mnt: mnt,
            }
        }
    }
}

impl Drop for ReadOnlyDir {
    fn drop(&mut self) {
        if self.mounted {
            let _ = std::process::Command::new("umount")
                .arg(&self.path)
                .status();
        } else {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o755));
        }
    }
}

#[tokio::test]
async fn a_database_in_a_read_only_directory() {
    let db = db(&[AGENTS, REPORTS]);
    db.agent("a1", "stopped", T0, "e-claude-code");
    db.report("r1", "a1", "abc1234", T0);
    let Db { dir, path, conn } = db;
    drop(conn); // The last connection checkpoints and removes -wal and -shm.
    assert!(!path.with_extension("db-shm").exists());
    let before = std::fs::read(&path).unwrap();
    let ro = ReadOnlyDir::new(dir.path());
    // The directory really refuses writes.
    assert!(std::fs::write(ro.path.join("probe"), b"x").is_err());
    let (storage, registry) = ledger();
    let report = ingester(&storage, &registry, &ro.path.join("state.db"))
        .sync()
        .await
        .unwrap();
    assert_eq!(counts(&report), (Some(1), 1, 1, 0, 1));
    drop(ro);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the runner's file was written"
    );
}

#[tokio::test]
async fn reading_never_changes_the_database_file() {
    let db = db(&[AGENTS]);
    db.agent("a1", "stopped", T0, "e-claude-code");
    db.conn
        .pragma_update(None, "wal_checkpoint", "TRUNCATE")
        .unwrap();
    let before = std::fs::read(&db.path).unwrap();
    let (storage, registry) = ledger();
    ingester(&storage, &registry, &db.path)
        .sync()
        .await
        .unwrap();
    assert_eq!(std::fs::read(&db.path).unwrap(), before);
}
