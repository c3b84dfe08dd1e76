//! `worlds`, `runs`, `history`: reading what came in, through the binary.

use autoresearch_test_support::statedb::AGENTS;
use rusqlite::Connection;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

struct Env {
    dir: tempfile::TempDir,
    ledger: PathBuf,
    db: PathBuf,
    conn: Connection,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.redb");
    let db = dir.path().join("state.db");
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch(AGENTS).unwrap();
    conn.execute_batch(
        "INSERT INTO agents VALUES ('a1','vm','booting','claude-code','r','main','t','2026-04-10T12:00:00Z',NULL,'nanogpt-claude-code','/ws');
        INSERT INTO agents VALUES ('a2','vm','running','opencode','r','main','t','2026-04-10T13:00:00Z',NULL,'other-opencode','/ws');",
    )
    .unwrap();
    Env {
        dir,
        ledger,
        db,
        conn,
    }
}

impl Env {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_autoresearch"))
            .arg("--ledger")
            .arg(&self.ledger)
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }

    fn sync(&self) {
        self.ok(&["ingest", "runner", self.db.to_str().unwrap()]);
    }
}

/// Three syncs: a1 goes booting -> running -> stopped.
fn history_env() -> Env {
    let env = env();
    env.sync();
    env.conn
        .execute("UPDATE agents SET status='running' WHERE agent_id='a1'", [])
        .unwrap();
    env.sync();
    env.conn
        .execute("UPDATE agents SET status='stopped', finished_at='2026-04-10T12:30:00Z' WHERE agent_id='a1'", [])
        .unwrap();
    env.sync();
    env
}

#[test]
fn runs_lists_filters_and_time_travels() {
    let env = history_env();
    let rows = env.json(&["runs", "--world", "runner-fleet", "--json"]);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["run__run_id"], "a1");
    assert_eq!(rows[0]["run__experiment_name"], "nanogpt");
    assert_eq!(rows[0]["run__status"], "stopped");
    assert_eq!(rows[0]["run__finished_at_ms"], 1_775_824_200_000i64);
    assert_eq!(
        rows[0].as_object().unwrap().len(),
        13,
        "every Run field as a column"
    );
    // One check helper, many filters: (args, expected run ids).
    let cases: &[(&[&str], &[&str])] = &[
        (&["--status", "running"], &["a2"]),
        (&["--status", "stopped"], &["a1"]),
        (&["--experiment", "other"], &["a2"]),
        (&["--experiment", "nanogpt", "--status", "running"], &[]),
        (&["--at", "1", "--status", "booting"], &["a1"]),
        (&["--at", "2", "--status", "running"], &["a1", "a2"]),
    ];
    for (extra, ids) in cases {
        let mut args = vec!["runs", "--world", "runner-fleet", "--json"];
        args.extend_from_slice(extra);
        let got: Vec<String> = env
            .json(&args)
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["run__run_id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(got, *ids, "{extra:?}");
    }
    let table = env.ok(&["runs", "--world", "runner-fleet"]);
    assert!(
        table.starts_with("RUN_ID") && table.contains("2026-04-10T12:30:00.000Z"),
        "{table}"
    );
}

#[test]
fn runs_errors_name_the_problem() {
    let env = history_env();
    let cases: &[(&[&str], &str)] = &[
        (&["runs", "--world", "nope"], "no world named \"nope\""),
        (
            &["runs", "--world", "runner-fleet", "--status", "done"],
            "unknown run status",
        ),
        (
            &["runs", "--world", "runner-fleet", "--at", "99"],
            "beyond its head 3",
        ),
        (
            &["history", "zz", "--world", "runner-fleet"],
            "no run \"zz\"",
        ),
        (&["log", "--experiment", "none"], "autoresearch:none"),
    ];
    for (args, message) in cases {
        let out = env.run(args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(message), "{args:?}: {err}");
    }
}

#[test]
fn history_shows_every_transition_with_its_tick() {
    let env = history_env();
    let h = env.json(&["history", "a1", "--world", "runner-fleet", "--json"]);
    let sets: Vec<(u64, String)> = h
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["change"] == "set")
        .map(|c| {
            (
                c["tick"].as_u64().unwrap(),
                c["value"]["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        sets,
        [
            (1, "booting".into()),
            (2, "running".into()),
            (3, "stopped".into())
        ]
    );
    let text = env.ok(&["history", "a1", "--world", "runner-fleet"]);
    assert!(
        text.contains("status: \"booting\" -> \"running\""),
        "{text}"
    );
    assert!(
        text.contains("finished_at_ms: 0 -> 1775824200000"),
        "{text}"
    );
}

#[test]
fn worlds_lists_heads_entities_and_forks() {
    let env = history_env();
    let tsv = env.dir.path().join("results.tsv");
    std::fs::write(
        &tsv,
        "commit\tval_bpb\tstatus\tdescription\na\t1.0\tkeep\tbase\n",
    )
    .unwrap();
    env.ok(&[
        "ingest",
        "tsv",
        tsv.to_str().unwrap(),
        "--experiment",
        "nano",
    ]);
    let worlds = env.json(&["worlds", "--json"]);
    let by_name = |n: &str| {
        worlds
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == n)
            .cloned()
            .unwrap()
    };
    let fleet = by_name("runner-fleet");
    assert_eq!(
        (fleet["head"].as_u64(), fleet["entities"].as_u64()),
        (Some(3), Some(2))
    );
    assert!(fleet["parent"].is_null());
    // Experiment, BranchHead, one Run and its Result.
    let nano = by_name("autoresearch:nano");
    assert_eq!(
        (nano["head"].as_u64(), nano["entities"].as_u64()),
        (Some(2), Some(4))
    );
    // A fork shows its parent and fork tick.
    env.ok(&[
        "fork",
        "--experiment",
        "nano",
        "--at",
        "2",
        "--promote",
        "nano-tsv-L2",
        "--name",
        "what-if",
    ]);
    let worlds = env.json(&["worlds", "--json"]);
    let fork = worlds
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "what-if")
        .unwrap();
    assert_eq!(
        (fork["parent"].as_str(), fork["fork_tick"].as_u64()),
        (Some("autoresearch:nano"), Some(2))
    );
    let table = env.ok(&["worlds"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("what-if") && l.contains("autoresearch:nano")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("runner-fleet") && l.contains(" 3 ")),
        "{table}"
    );
}

/// (`status` and `show` need a config first; they open the ledger the same way.)
#[test]
fn read_commands_never_create_a_mistyped_ledger() {
    let e = env();
    let ledger = e.dir.path().join("mistyped/ledger.redb");
    for args in [
        &["worlds"][..],
        &["runs", "--world", "x"],
        &["history", "--world", "x", "a1"],
        &["log", "--experiment", "x"],
        &["plot", "--experiment", "x"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_autoresearch"))
            .arg("--ledger")
            .arg(&ledger)
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            stderr.contains("mistyped/ledger.redb") && stderr.contains("does not exist"),
            "{args:?}: {stderr}"
        );
        assert!(
            !e.dir.path().join("mistyped").exists(),
            "{args:?} created it"
        );
    }
}

/// A run's report joins its row under the Python engine's names
/// (`runreport__run_id`, not the runner's `agent_id`); runs without one keep
/// exactly the Run's columns.
#[test]
fn runs_json_carries_the_report_with_the_engines_column_names() {
    let env = env();
    env.conn
        .execute_batch(autoresearch_test_support::statedb::REPORTS)
        .unwrap();
    env.conn
        .execute(
            "INSERT INTO run_reports (report_id, agent_id, exit_status, commit_hash, created_at) VALUES ('r1', 'a1', 'completed', 'abc1234', '2026-04-10T12:30:00Z')",
            [],
        )
        .unwrap();
    env.sync();
    let rows = env.json(&["runs", "--world", "runner-fleet", "--json"]);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows[0]["runreport__run_id"], "a1");
    assert_eq!(rows[0]["runreport__report_id"], "r1");
    assert_eq!(rows[0]["runreport__exit_status"], "completed");
    assert_eq!(rows[0]["runreport__commit_hash"], "abc1234");
    assert!(rows[0].get("runreport__agent_id").is_none());
    assert_eq!(
        rows[1].as_object().unwrap().len(),
        13,
        "no report, no columns"
    );
}
