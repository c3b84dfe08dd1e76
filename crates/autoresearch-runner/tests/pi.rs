//! pi-autoresearch's `autoresearch.jsonl`, in files of its shape: what each
//! imports as, and a re-import of a grown log.

mod common;

use autoresearch_core::lifecycle;
use autoresearch_core::{World, experiment_world_name};
use autoresearch_runner::pi;
use autoresearch_runner::tsv::{self, Direction, TsvImport};
use serde_json::json;

const LOG: &str = r#"{"type":"config","name":"Optimize sort","metricName":"total_ms","metricUnit":"ms","bestDirection":"lower"}
{"run":1,"commit":"abc1234","metric":40.7,"metrics":{"size_kib":5015},"status":"keep","description":"baseline","timestamp":1777278226000,"confidence":null,"iterationTokens":null,"asi":{"note":"first"}}
{"run":2,"commit":"bcd2345","metric":42.1,"metrics":{"size_kib":5010},"status":"discard","description":"radix sort","timestamp":1777278284000,"confidence":0.4}
{"type":"hook","event":"after","stdout":"noted"}
{"run":3,"commit":"cde3456","metric":0,"metrics":{},"status":"crash","description":"unsafe swap segfaults","timestamp":1777278300000,"confidence":null}
{"run":4,"commit":"def4567","metric":33.5,"metrics":{"size_kib":5020},"status":"keep","description":"insertion sort for small slices","timestamp":1777278400000,"confidence":2.4}
{"run":5,"commit":"ef05678","metric":31.0,"metrics":{},"status":"checks_failed","description":"skips a test","timestamp":1777278500000,"confidence":null}
"#;

fn opts() -> TsvImport {
    TsvImport {
        experiment: "sort".into(),
        metric: None,
        direction: None,
        strict: false,
    }
}

#[tokio::test]
async fn a_pi_log_imports_as_an_experiment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("autoresearch.jsonl");
    std::fs::write(&path, LOG).unwrap();
    let (storage, registry) = common::ledger();
    let r = pi::import(storage.clone(), registry.clone(), &path, &opts())
        .await
        .unwrap();
    assert_eq!(
        (r.imported, r.kept, r.discarded, r.crashed),
        (5, 2, 1, 2),
        "{r}"
    );
    assert_eq!(
        (r.metric.as_str(), r.direction.as_str()),
        ("total_ms", "minimize")
    );
    assert_eq!(r.kept_lines.len(), 1, "the hook line is kept out: {r}");
    let w = World::open(
        storage.clone(),
        registry.clone(),
        &experiment_world_name("sort"),
    )
    .await
    .unwrap();
    let a = lifecycle::attempts(&w, "sort");
    let out = a[0].results[0].outputs().unwrap();
    assert_eq!(out["total_ms"], json!(40.7));
    assert_eq!(out["size_kib"], json!(5015.0));
    assert_eq!(out["_units"], json!({"total_ms": "ms"}));
    assert_eq!(out["_pi"]["asi"], json!({"note": "first"}));
    // A crash (and a failed check) has no score.
    assert!(a[2].results[0].outputs().unwrap().get("total_ms").is_none());
    assert_eq!(a[4].outcome.as_ref().unwrap().status, "crash");
    assert_eq!(w.branch_head("sort").unwrap().1.commit_hash, "def4567");
    let (text, _) = tsv::attempt_log(&w, "sort").to_tsv();
    assert_eq!(
        text,
        "commit\ttotal_ms\tsize_kib\tstatus\tdescription\n\
abc1234\t40.7\t5015\tkeep\tbaseline\n\
bcd2345\t42.1\t5010\tdiscard\tradix sort\n\
cde3456\t\t\tcrash\tunsafe swap segfaults\n\
def4567\t33.5\t5020\tkeep\tinsertion sort for small slices\n\
ef05678\t\t\tcrash\tskips a test\n"
    );
    // The log grows (pi appends); a re-import adds only the new run.
    let grown = format!(
        "{LOG}{}\n",
        r#"{"run":6,"commit":"f016789","metric":30.2,"metrics":{},"status":"keep","description":"fewer allocations","timestamp":1777278600000,"confidence":3.1}"#
    );
    std::fs::write(&path, grown).unwrap();
    let again = pi::import(storage, registry, &path, &opts()).await.unwrap();
    assert_eq!((again.imported, again.already_present), (1, 5), "{again}");
}

/// A log, the direction option, and the (metric, direction, runs) it gives
/// or its malformed lines.
type PiCase<'a> = (
    &'a str,
    Option<Direction>,
    Result<(&'a str, &'a str, usize), &'a [usize]>,
);

#[tokio::test]
async fn pi_log_shapes() {
    let cases: &[PiCase] = &[
        (
            r#"{"type":"config","name":"x","metricName":"score","metricUnit":"","bestDirection":"higher"}
{"run":1,"commit":"a","metric":3.2e-8,"metrics":{},"status":"keep","description":"tiny"}
"#,
            None,
            Ok(("score", "maximize", 1)),
        ),
        // No header: the metric is called `metric`.
        (
            r#"{"run":1,"commit":"a","metric":1,"metrics":{},"status":"keep","description":"d"}"#,
            Some(Direction::Maximize),
            Ok(("metric", "maximize", 1)),
        ),
        (
            "{\"run\":1,\"commit\":\"a\",\"metric\":1,\"status\":\"keep\"}\nnot json\n[1]\n{\"run\":2,\"metric\":1,\"status\":\"keep\"}\n{\"run\":3,\"commit\":\"c\",\"metric\":1,\"status\":\"maybe\"}\n{\"run\":4,\"commit\":\"d\",\"status\":\"keep\"}\n",
            None,
            Err(&[2, 3, 4, 5, 6]),
        ),
        // A second config with an unknown direction or an empty metric
        // name is malformed and ignored: the first config stands.
        (
            r#"{"type":"config","name":"x","metricName":"score","bestDirection":"higher"}
{"run":1,"commit":"a","metric":2,"metrics":{},"status":"keep","description":"d"}
{"type":"config","name":"x","metricName":"score","bestDirection":"sideways"}
{"type":"config","name":"x","metricName":"","bestDirection":"lower"}
"#,
            None,
            Err(&[3, 4]),
        ),
    ];
    for (text, direction, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("autoresearch.jsonl");
        std::fs::write(&path, text).unwrap();
        let (storage, registry) = common::ledger();
        let o = TsvImport {
            direction: *direction,
            ..opts()
        };
        let r = pi::import(storage, registry, &path, &o).await.unwrap();
        match want {
            Ok((metric, dir, n)) => {
                assert_eq!(
                    (r.metric.as_str(), r.direction.as_str(), r.imported),
                    (*metric, *dir, *n),
                    "{r}"
                );
                assert!(r.malformed.is_empty(), "{r}");
            }
            Err(lines) => {
                let got: Vec<usize> = r.malformed.iter().map(|m| m.line).collect();
                assert_eq!(got, *lines, "{r}");
                assert!(!r.metric.is_empty(), "{r}");
            }
        }
    }
}
