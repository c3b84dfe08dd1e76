//! results.tsv files as they come from editors, forks and hand edits: a
//! table of inputs (encodings, line ends, columns, kept lines, precision,
//! placeholders) with the ledger contents and export bytes each must give,
//! and a table of re-imports (appends, edits, deletions, metric changes)
//! with what each must report and leave in the ledger.

mod common;

use autoresearch_core::ledger::entity_history;
use autoresearch_core::lifecycle::{self, Attempt};
use autoresearch_core::{Tick, World, experiment_world_name};
use autoresearch_runner::tsv::{self, Direction, TsvImport, TsvReport};
use serde_json::{Value, json};
use std::path::PathBuf;

const KARPATHY: &str = "commit\tval_bpb\tmemory_gb\tstatus\tdescription
a1b2c3d\t0.997900\t44.0\tkeep\tbaseline
b2c3d4e\t0.993200\t44.2\tkeep\tincrease LR to 0.04
c3d4e5f\t1.005000\t44.0\tdiscard\tswitch to GeLU activation
d4e5f6a\t0.000000\t0.0\tcrash\tdouble model width (OOM)
e5f6a7b\t0.991100\t44.1\tkeep\tweight decay 0.1
";

fn opts(metric: Option<&str>, direction: Option<Direction>) -> TsvImport {
    TsvImport {
        experiment: "x".into(),
        metric: metric.map(String::from),
        direction,
        strict: false,
    }
}

struct Ledger {
    _dir: tempfile::TempDir,
    path: PathBuf,
    storage: std::sync::Arc<dyn autoresearch_core::Storage>,
    registry: std::sync::Arc<autoresearch_core::ComponentRegistry>,
}

impl Ledger {
    fn new() -> Ledger {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.tsv");
        let (storage, registry) = common::ledger();
        Ledger {
            _dir: dir,
            path,
            storage,
            registry,
        }
    }

    async fn import(&self, bytes: &[u8], o: &TsvImport) -> TsvReport {
        std::fs::write(&self.path, bytes).unwrap();
        tsv::import(self.storage.clone(), self.registry.clone(), &self.path, o)
            .await
            .unwrap()
    }

    async fn world(&self) -> World {
        World::open(
            self.storage.clone(),
            self.registry.clone(),
            &experiment_world_name("x"),
        )
        .await
        .unwrap()
    }

    async fn export(&self) -> String {
        tsv::attempt_log(&self.world().await, "x").to_tsv().0
    }

    async fn attempts(&self) -> Vec<Attempt> {
        lifecycle::attempts(&self.world().await, "x")
    }
}

fn utf16(text: &str, big_endian: bool) -> Vec<u8> {
    let mut out = if big_endian {
        vec![0xFE, 0xFF]
    } else {
        vec![0xFF, 0xFE]
    };
    for u in text.encode_utf16() {
        out.extend(if big_endian {
            u.to_be_bytes()
        } else {
            u.to_le_bytes()
        });
    }
    out
}

/// The metric value of each attempt, `None` where it has none.
fn metric_of(attempts: &[Attempt], metric: &str) -> Vec<Option<f64>> {
    attempts
        .iter()
        .map(|a| a.results.first()?.outputs().ok()?.get(metric)?.as_f64())
        .collect()
}

/// (name, file bytes, expected export, metric per row, lines kept as they are)
type ShapeCase<'a> = (&'a str, Vec<u8>, String, Vec<Option<f64>>, usize);

#[tokio::test]
async fn each_shape_imports_and_exports_as_it_was() {
    let crlf = KARPATHY.replace('\n', "\r\n");
    let reordered = "status\tcommit\tdescription\tval_bpb\n\
keep\ta1b2c3d\tbaseline\t0.997900\n\
crash\tb2c3d4e\toom\t0.000000\n\
keep\tc3d4e5f\tsmaller\t0.990000\n";
    let extra = "commit\tval_bpb\tgpu\tmemory_gb\tstatus\tdescription\n\
a1b2c3d\t0.997900\tH100\t44.0\tkeep\tbaseline\n\
b2c3d4e\t0.993200\t\t44.2\tdiscard\tno gpu noted\n";
    let missing = "commit\tval_bpb\tstatus\na1b2c3d\t0.9979\tkeep\nb2c3d4e\t0.99\tdiscard\n";
    let kept_lines = "# fork A, started 2026-03-01\n\
commit\tval_bpb\tstatus\tdescription\n\
a1b2c3d\t0.997900\tkeep\tbaseline\n\
\n\
## fork B\n\
commit\tval_bpb\tstatus\tdescription\n\
b2c3d4e\t0.993200\tkeep\tLR 0.04\n\
# trailing note\n";
    let precise = "commit\tval_bpb\tlr\tstatus\tdescription\n\
a1b2c3d\t3.2e-08\t0.04\tkeep\tbaseline\n\
b2c3d4e\t0.0000000001\t3e-4\tkeep\tlower lr\n\
c3d4e5f\t1.5e-05\t1.5e-05\tdiscard\ttiny\n\
d4e5f6a\t0.30000000000000004\t0.1\tdiscard\tfloat noise kept\n";
    let no_final_newline = KARPATHY.trim_end_matches('\n');
    // (name, bytes, expected export, metric per row, rows kept as lines)
    let cases: Vec<ShapeCase> = vec![
        (
            "karpathy",
            KARPATHY.into(),
            KARPATHY.into(),
            vec![Some(0.9979), Some(0.9932), Some(1.005), None, Some(0.9911)],
            0,
        ),
        (
            "crlf",
            crlf.clone().into(),
            crlf.clone(),
            vec![Some(0.9979), Some(0.9932), Some(1.005), None, Some(0.9911)],
            0,
        ),
        (
            "utf-8 bom",
            [b"\xEF\xBB\xBF".as_slice(), KARPATHY.as_bytes()].concat(),
            KARPATHY.into(),
            vec![Some(0.9979), Some(0.9932), Some(1.005), None, Some(0.9911)],
            0,
        ),
        (
            "utf-16le bom crlf (PowerShell)",
            utf16(&crlf, false),
            crlf.clone(),
            vec![Some(0.9979), Some(0.9932), Some(1.005), None, Some(0.9911)],
            0,
        ),
        (
            "utf-16be bom",
            utf16(KARPATHY, true),
            KARPATHY.into(),
            vec![Some(0.9979), Some(0.9932), Some(1.005), None, Some(0.9911)],
            0,
        ),
        (
            "reordered columns",
            reordered.into(),
            reordered.into(),
            vec![Some(0.9979), None, Some(0.99)],
            0,
        ),
        (
            "an extra text column",
            extra.into(),
            extra.into(),
            vec![Some(0.9979), Some(0.9932)],
            0,
        ),
        (
            "missing columns",
            missing.into(),
            missing.into(),
            vec![Some(0.9979), Some(0.99)],
            0,
        ),
        (
            "comments, sections, blank lines, a repeated header",
            kept_lines.into(),
            kept_lines.into(),
            vec![Some(0.9979), Some(0.9932)],
            5,
        ),
        (
            "every digit kept",
            precise.into(),
            precise.into(),
            vec![
                Some(3.2e-8),
                Some(1e-10),
                Some(1.5e-5),
                Some(0.30000000000000004),
            ],
            0,
        ),
        (
            "no final newline",
            no_final_newline.into(),
            no_final_newline.into(),
            vec![Some(0.9979), Some(0.9932), Some(1.005), None, Some(0.9911)],
            0,
        ),
    ];
    for (name, bytes, export, metrics, kept) in cases {
        let l = Ledger::new();
        let report = l.import(&bytes, &opts(None, None)).await;
        assert!(report.malformed.is_empty(), "{name}: {report}");
        assert_eq!(report.kept_lines.len(), kept, "{name}: {report}");
        assert_eq!(
            (report.first_tick, report.last_tick),
            (Some(1), Some(2)),
            "{name}: the experiment, then one tick"
        );
        assert_eq!(report.metric, "val_bpb", "{name}");
        let attempts = l.attempts().await;
        assert_eq!(metric_of(&attempts, "val_bpb"), metrics, "{name}");
        assert_eq!(l.export().await, export, "{name}: export bytes");
        // The same file again adds nothing and writes no tick.
        let again = l.import(&bytes, &opts(None, None)).await;
        assert_eq!(
            (again.imported, again.changed, again.already_present),
            (0, 0, attempts.len()),
            "{name}: {again}"
        );
        assert_eq!(again.first_tick, None, "{name}");
    }
}

#[tokio::test]
async fn the_precise_values_are_the_printed_ones() {
    let l = Ledger::new();
    l.import(
        b"commit\tval_bpb\tlr\tstatus\na\t3.2e-08\t3e-4\tkeep\n",
        &opts(None, None),
    )
    .await;
    let a = l.attempts().await;
    let out = a[0].results[0].outputs().unwrap();
    assert_eq!(out["val_bpb"].as_f64(), Some(3.2e-8));
    assert_eq!(out["lr"].as_f64(), Some(3e-4));
}

/// (what the file becomes on re-import, expected (imported, changed,
/// already present), whether it writes a tick, commits reported gone, the
/// export after it).
type Reimport<'a> = (
    &'a str,
    String,
    (usize, usize, usize),
    bool,
    Vec<&'a str>,
    String,
);

#[tokio::test]
async fn reimports_add_change_and_report_never_drop() {
    let rows: Vec<&str> = KARPATHY.lines().collect();
    let appended = format!("{KARPATHY}f6a7b8c\t0.990000\t44.0\tkeep\tnew idea\n");
    // Rows 2 and 3 deleted, one appended: the lost row.
    let deleted = format!(
        "{}\n{}\n{}\n{}\nf6a7b8c\t0.990000\t44.0\tkeep\tnew idea\n",
        rows[0], rows[1], rows[4], rows[5]
    );
    let edited = KARPATHY.replace("b2c3d4e\t0.993200", "b2c3d4e\t0.993100");
    let moved = format!(
        "{}\n{}\n{}\n{}\n{}\n{}\n",
        rows[0], rows[5], rows[4], rows[3], rows[2], rows[1]
    );
    let duplicated = format!("{KARPATHY}{}\n", rows[3]);
    let cases: Vec<Reimport> = vec![
        (
            "a row appended",
            appended.clone(),
            (1, 0, 5),
            true,
            vec![],
            appended.clone(),
        ),
        (
            "rows deleted in the middle, one appended",
            deleted,
            (1, 0, 3),
            true,
            vec!["b2c3d4e", "c3d4e5f"],
            // Deleted rows stay in the ledger (and in its export).
            appended.clone(),
        ),
        (
            "a value corrected in place",
            edited.clone(),
            (0, 1, 4),
            true,
            vec![],
            edited,
        ),
        (
            // Nothing new, but the head is the file's last kept row.
            "rows reordered",
            moved,
            (0, 0, 5),
            true,
            vec![],
            KARPATHY.to_string(),
        ),
        (
            "a row duplicated",
            duplicated.clone(),
            (1, 0, 5),
            true,
            vec![],
            duplicated,
        ),
    ];
    for (name, second, counts, ticks, gone, export) in cases {
        let l = Ledger::new();
        l.import(KARPATHY.as_bytes(), &opts(None, None)).await;
        let before: Vec<String> = l
            .attempts()
            .await
            .iter()
            .map(|a| a.run.run_id.clone())
            .collect();
        let r = l.import(second.as_bytes(), &opts(None, None)).await;
        assert_eq!(
            (r.imported, r.changed, r.already_present),
            counts,
            "{name}: {r}"
        );
        let gone_commits: Vec<&str> = r.gone.iter().map(|g| g.commit.as_str()).collect();
        assert_eq!(gone_commits, gone, "{name}");
        assert_eq!(r.first_tick, ticks.then_some(3), "{name}: one tick or none");
        let after: Vec<String> = l
            .attempts()
            .await
            .iter()
            .map(|a| a.run.run_id.clone())
            .collect();
        assert_eq!(&after[..before.len()], &before[..], "{name}: runs kept");
        assert_eq!(l.export().await, export, "{name}");
    }
}

/// An edit in place is a change of the same run, visible in its history.
#[tokio::test]
async fn an_edit_is_a_change_in_history() {
    let l = Ledger::new();
    l.import(KARPATHY.as_bytes(), &opts(None, None)).await;
    let edited = KARPATHY.replace("discard\tswitch to GeLU", "keep\tswitch to GeLU");
    let mut appended = edited.clone();
    appended.push_str("f0a1b2c\t0.990000\t44.0\tdiscard\tone more row\n");
    let r = l.import(appended.as_bytes(), &opts(None, None)).await;
    assert_eq!(r.changed, 1, "{r}");
    // The status breakdown is of the imported (new) rows only: it adds up.
    assert_eq!(
        (r.imported, r.kept, r.discarded, r.crashed),
        (1, 0, 1, 0),
        "{r}"
    );
    assert!(
        r.to_string()
            .contains("imported 1 (keep 0, discard 1, crash 0), changed 1"),
        "{r}"
    );
    let w = l.world().await;
    let a = &lifecycle::attempts(&w, "x")[2];
    assert_eq!(a.outcome.as_ref().unwrap().status, "keep");
    let history = entity_history(l.storage.as_ref(), w.id(), a.entity, w.tick())
        .await
        .unwrap();
    let mut ticks: Vec<Tick> = history.iter().map(|h| h.tick).collect();
    ticks.dedup();
    assert_eq!(ticks, [Tick(2), Tick(3)], "created, then changed");
    // The kept rows after it now have it as their base; the head is unchanged.
    assert_eq!(w.branch_head("x").unwrap().1.commit_hash, "e5f6a7b");
}

/// `--metric` and the direction on a re-import take effect (the head's
/// descriptor reads the new metric), and are remembered for the next one.
#[tokio::test]
async fn metric_and_direction_changes_take_effect() {
    let l = Ledger::new();
    let r = l.import(KARPATHY.as_bytes(), &opts(None, None)).await;
    assert_eq!(
        (r.metric.as_str(), r.direction.as_str()),
        ("val_bpb", "minimize")
    );
    let r = l
        .import(
            KARPATHY.as_bytes(),
            &opts(Some("memory_gb"), Some(Direction::Maximize)),
        )
        .await;
    assert_eq!(r.metric, "memory_gb");
    assert_eq!(r.notes.len(), 2, "{r}");
    assert!(r.notes[0].contains("metric changed from val_bpb to memory_gb"));
    assert!(r.notes[1].contains("direction changed from minimize to maximize"));
    let w = l.world().await;
    assert_eq!(
        w.branch_head("x").unwrap().1.descriptor().unwrap(),
        json!({"memory_gb": 44.1})
    );
    let meta = w.experiment("x").unwrap().1.metadata().unwrap();
    assert_eq!(meta["metric"], "memory_gb");
    assert_eq!(meta["direction"], "maximize");
    // Without options, the recorded ones hold.
    let r = l.import(KARPATHY.as_bytes(), &opts(None, None)).await;
    assert_eq!(
        (r.metric.as_str(), r.direction.as_str()),
        ("memory_gb", "maximize")
    );
    assert!(r.notes.is_empty(), "{r}");
    // The export still writes every digit as the file had it.
    assert_eq!(l.export().await, KARPATHY);
}

/// A file whose metric column holds no number: nothing is imported, and the
/// report names the columns that do.
#[tokio::test]
async fn a_wrong_metric_column_is_reported_with_the_numeric_ones() {
    let l = Ledger::new();
    let r = l
        .import(
            b"commit\tgpu\tval_bpb\tstatus\na\tH100\t0.99\tkeep\nb\tA100\t0.98\tkeep\n",
            &opts(None, None),
        )
        .await;
    assert_eq!((r.imported, r.malformed.len()), (0, 2));
    assert!(
        r.notes[0].contains("columns holding numbers: val_bpb"),
        "{r}"
    );
    let r = l
        .import(
            b"commit\tgpu\tval_bpb\tstatus\na\tH100\t0.99\tkeep\nb\tA100\t0.98\tkeep\n",
            &opts(Some("val_bpb"), None),
        )
        .await;
    assert_eq!(r.imported, 2, "{r}");
    let out: Value = l.attempts().await[0].results[0].outputs().unwrap();
    assert_eq!(out["gpu"], "H100");
}

#[tokio::test]
async fn undecodable_files_say_so_once() {
    let l = Ledger::new();
    std::fs::write(&l.path, b"commit\tval_bpb\xff\tstatus\n").unwrap();
    let err = tsv::import(
        l.storage.clone(),
        l.registry.clone(),
        &l.path,
        &opts(None, None),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("neither UTF-8"), "{err}");
    assert_eq!(err.matches("UTF-8").count(), 2, "one message: {err}");
    std::fs::write(&l.path, [0xFF, 0xFE, 0x41]).unwrap();
    let err = tsv::import(
        l.storage.clone(),
        l.registry.clone(),
        &l.path,
        &opts(None, None),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("UTF-16LE"), "{err}");
}

/// A file of which no row can be read (only unknown statuses): its rows are
/// named malformed, no hint blames the numeric metric column, and no empty
/// experiment is left behind.
#[tokio::test]
async fn a_file_of_no_readable_row_creates_nothing_and_blames_the_rows() {
    let l = Ledger::new();
    let text = "commit\tval_bpb\tstatus\tdescription\na1\t0.99\tmaybe\tx\nb2\t0.98\tperhaps\ty\n";
    let r = l.import(text.as_bytes(), &opts(None, None)).await;
    assert_eq!((r.imported, r.malformed.len()), (0, 2), "{r}");
    assert!(
        r.notes.iter().all(|n| !n.contains("--metric")),
        "the metric column holds numbers: {r}"
    );
    assert_eq!(r.first_tick, None, "{r}");
    assert!(
        l.storage
            .find_world(&experiment_world_name("x"))
            .await
            .unwrap()
            .is_none(),
        "no world made for a file that gave nothing"
    );
}
