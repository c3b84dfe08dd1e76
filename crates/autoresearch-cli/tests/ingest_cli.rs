//! `autoresearch ingest ...` end to end: the real binary, a real redb ledger
//! and real state.db / results.tsv files in temp dirs.

use autoresearch_test_support::statedb::{AGENTS, create_wal};
use rusqlite::Connection;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const KARPATHY: &str = "commit\tval_bpb\tmemory_gb\tstatus\tdescription
a1b2c3d\t0.997900\t44.0\tkeep\tbaseline
b2c3d4e\t0.993200\t44.2\tkeep\tincrease LR to 0.04
c3d4e5f\t1.005000\t44.0\tdiscard\tswitch to GeLU activation
d4e5f6g\t0.000000\t0.0\tcrash\tdouble model width (OOM)
";

struct Env {
    dir: tempfile::TempDir,
    ledger: PathBuf,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.redb");
    Env { dir, ledger }
}

impl Env {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_autoresearch"));
        c.arg("--ledger").arg(&self.ledger).args(args);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs a command that must succeed and parses its stdout as JSON.
    fn json(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn state_db(&self) -> (PathBuf, Connection) {
        let path = self.dir.path().join("state.db");
        let conn = create_wal(&path, &[AGENTS]);
        for (id, status) in [("a1", "booting"), ("a2", "stopped")] {
            conn.execute(
                "INSERT INTO agents VALUES (?1,'vm','booting','claude-code','r','main','t','2026-04-10T12:00:00Z',NULL,'nanogpt-claude-code','/ws')",
                [id],
            )
            .unwrap();
            conn.execute(
                "UPDATE agents SET status = ?1 WHERE agent_id = ?2",
                [status, id],
            )
            .unwrap();
        }
        (path, conn)
    }
}

fn text(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Two processes, one ledger file: the second sync finds the first's runs.
#[test]
fn runner_ingest_is_incremental_across_processes() {
    let env = env();
    let (db, conn) = env.state_db();
    let first = env.json(&["ingest", "runner", text(&db), "--json"]);
    assert_eq!(
        (first["runs_added"].as_u64(), first["tick"].as_u64()),
        (Some(2), Some(1))
    );
    let again = env.json(&["ingest", "runner", text(&db), "--json"]);
    assert_eq!(
        (again["runs_added"].as_u64(), again["runs_changed"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(again["tick"].is_null());
    conn.execute(
        "UPDATE agents SET status = 'running' WHERE agent_id = 'a1'",
        [],
    )
    .unwrap();
    let changed = env.json(&["ingest", "runner", text(&db), "--json"]);
    assert_eq!(
        (changed["runs_changed"].as_u64(), changed["tick"].as_u64()),
        (Some(1), Some(2))
    );
    // The human report names the counts.
    let out = env.run(&["ingest", "runner", text(&db), "--world", "other"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("rows read 2, runs added 2"), "{stdout}");
}

#[test]
fn bad_runner_input_fails_and_leaves_no_world() {
    let env = env();
    let junk = env.dir.path().join("junk.db");
    std::fs::write(&junk, "not sqlite at all ".repeat(100)).unwrap();
    let missing = env.dir.path().join("missing.db");
    for (path, message) in [(&junk, "not a SQLite database"), (&missing, "no such file")] {
        let out = env.run(&["ingest", "runner", text(path)]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(message) && err.contains(text(path)), "{err}");
    }
    assert_eq!(env.json(&["worlds", "--json"]), serde_json::json!([]));
}

#[test]
fn tsv_import_and_log_export_round_trip() {
    let env = env();
    let path = env.dir.path().join("results.tsv");
    std::fs::write(&path, KARPATHY).unwrap();
    let report = env.json(&[
        "ingest",
        "tsv",
        text(&path),
        "--experiment",
        "nano",
        "--json",
    ]);
    assert_eq!(report["imported"], 4);
    let out = env.run(&["log", "--experiment", "nano", "--format", "tsv"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), KARPATHY);
    let log = env.json(&["log", "--experiment", "nano", "--format", "json"]);
    assert_eq!(log["metric"], "val_bpb");
    assert_eq!(log["rows"][1]["run__commit_hash"], "b2c3d4e");
    assert_eq!(log["rows"][3]["outcome__status"], "crash");
    let table = env.run(&["log", "--experiment", "nano"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("increase LR to 0.04") && table.contains("0.993200"),
        "{table}"
    );
}

#[test]
fn strict_tsv_import_names_the_bad_lines() {
    let env = env();
    let path = env.dir.path().join("results.tsv");
    std::fs::write(
        &path,
        format!("{KARPATHY}e\tnope\t1.0\tkeep\tbad metric\nf\t1.0\tkeep\n"),
    )
    .unwrap();
    let out = env.run(&[
        "ingest",
        "tsv",
        text(&path),
        "--experiment",
        "x",
        "--strict",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 6") && err.contains("line 7"), "{err}");
    assert_eq!(env.json(&["worlds", "--json"]), serde_json::json!([]));
    let lenient = env.json(&["ingest", "tsv", text(&path), "--experiment", "x", "--json"]);
    assert_eq!(lenient["imported"], 4);
    assert_eq!(lenient["malformed"][0]["line"], 6);
}

/// `--watch` syncs on its interval and Ctrl-C (SIGINT) ends it cleanly.
#[test]
fn watch_syncs_until_interrupted() {
    let env = env();
    let (db, conn) = env.state_db();
    let mut child = env
        .cmd(&["ingest", "runner", text(&db), "--watch", "1", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["runs_added"], 2);
    conn.execute(
        "UPDATE agents SET status = 'stopped' WHERE agent_id = 'a1'",
        [],
    )
    .unwrap();
    // Later syncs report the change once, then nothing.
    let mut changed = 0;
    for _ in 0..2 {
        let r: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        changed += r["runs_changed"].as_u64().unwrap();
    }
    assert_eq!(changed, 1);
    let ok = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("--watch did not stop after SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn every_command_has_help_with_an_example() {
    let env = env();
    for cmd in [
        &["ingest", "runner"][..],
        &["ingest", "tsv"],
        &["ingest"],
        &["worlds"],
        &["runs"],
        &["history"],
        &["log"],
    ] {
        let mut args = cmd.to_vec();
        args.push("--help");
        let out = env.run(&args);
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{cmd:?}");
        assert!(
            help.contains("Example") && help.contains("autoresearch "),
            "{cmd:?}: {help}"
        );
    }
}
