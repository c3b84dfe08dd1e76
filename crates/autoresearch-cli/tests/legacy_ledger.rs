//! Old ledgers read unchanged. `tests/fixtures/legacy-ledger-v1` holds a redb
//! ledger that the binary of the first ledger format wrote (a loop run with
//! keep, discard and crash outcomes, a fork continued on its own branch, a
//! results.tsv import, a vote, a fork of that), and what the read commands
//! printed for it then. Today's binary, reading a copy, must print the same
//! bytes. The fixture is never regenerated: see its README.

use autoresearch_test_support::git::git;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_autoresearch");

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/legacy-ledger-v1")
}

/// Each read command and the file under `expected/` holding what it printed
/// when the fixture was made.
const CASES: &[(&[&str], &str)] = &[
    (&["worlds", "--json"], "worlds.json"),
    (&["log", "--experiment", "exp", "--json"], "log-exp.json"),
    (
        &["log", "--experiment", "exp", "--format", "tsv"],
        "log-exp.tsv",
    ),
    (&["log", "--experiment", "nano", "--json"], "log-nano.json"),
    (
        &["log", "--experiment", "nano", "--format", "tsv"],
        "log-nano.tsv",
    ),
    (&["status", "--json"], "status-exp.json"),
    (
        &["status", "--world", "exp-alt", "--json"],
        "status-exp-alt.json",
    ),
    (
        &["runs", "--world", "autoresearch:exp", "--json"],
        "runs-exp.json",
    ),
    (
        &["runs", "--world", "exp-alt", "--json"],
        "runs-exp-alt.json",
    ),
    (
        &["runs", "--world", "autoresearch:nano", "--json"],
        "runs-nano.json",
    ),
    (&["runs", "--world", "gelu", "--json"], "runs-gelu.json"),
    (
        &[
            "runs",
            "--world",
            "autoresearch:nano",
            "--at",
            "3",
            "--json",
        ],
        "runs-nano-at-3.json",
    ),
    (
        &["history", "nano-tsv-L4", "--world", "gelu", "--json"],
        "history-gelu-L4.json",
    ),
];

/// Outputs of v1 that were wrong, and the correction today's binary makes
/// (issue 16): a fork's `status` names the fork's own branch
/// (`autoresearch/{fork}`, where `run --world FORK` works), not the
/// experiment's, and says what it is a fork of. Nothing else may differ.
fn deliberate_change(file: &str) -> Option<fn(&mut serde_json::Value)> {
    match file {
        "status-exp-alt.json" => Some(|v| {
            v["branch"] = "autoresearch/exp-alt".into();
            v["fork_of"] = serde_json::json!({"world": "autoresearch:exp", "tick": 27});
        }),
        _ => None,
    }
}

#[test]
fn the_v1_legacy_ledger_reads_unchanged() {
    // A copy in a repository of its own: the fixture is never written, and
    // `status` finds no branch tip whatever directory encloses the temp dir,
    // as when the expectations were captured.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    std::fs::create_dir_all(dir.join(".autoresearch")).unwrap();
    git(&dir, &["init", "-q", "-b", "main"]);
    let fx = fixture();
    std::fs::copy(
        fx.join("ledger.redb"),
        dir.join(".autoresearch/ledger.redb"),
    )
    .unwrap();
    std::fs::copy(fx.join("autoresearch.toml"), dir.join("autoresearch.toml")).unwrap();
    for (args, file) in CASES {
        let out = Command::new(BIN)
            .args(*args)
            .current_dir(&dir)
            .env_remove("AUTORESEARCH_LEDGER")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "autoresearch {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let expected = std::fs::read(fx.join("expected").join(file)).unwrap();
        if let Some(fix) = deliberate_change(file) {
            // A documented correction of what v1 printed: the rest unchanged.
            let mut want: serde_json::Value = serde_json::from_slice(&expected).unwrap();
            fix(&mut want);
            let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(
                got, want,
                "autoresearch {args:?} against expected/{file} corrected"
            );
            continue;
        }
        if file.starts_with("log-") && *file != "log-nano.tsv" {
            as_v1_log(file, &out.stdout, &expected);
            continue;
        }
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&expected),
            "autoresearch {args:?} no longer prints expected/{file}"
        );
        assert_eq!(out.stdout, expected, "expected/{file}, byte for byte");
    }
}

/// The one deliberate change to what a v1 ledger reads as (issue #16):
/// `log` gives what was tried in `description` and the decision's reason in
/// a `reason` column of its own. A v1 ledger holds no `Description`, so a
/// loop row's description is now empty (`baseline` for a baseline) and its
/// reason is what v1 printed as the description; an imported row keeps its
/// file's description. Asserts that `printed`, read back in v1's terms, is
/// exactly `expected` (an imported file's TSV shape is unchanged and is
/// compared byte for byte by the caller).
fn as_v1_log(file: &str, printed: &[u8], expected: &[u8]) {
    let v1 = |description: &str, reason: &str| -> String {
        let fallback = description.is_empty() || description == "baseline";
        if fallback && !reason.is_empty() {
            reason.to_string()
        } else {
            description.to_string()
        }
    };
    let printed = String::from_utf8(printed.to_vec()).unwrap();
    if file.ends_with(".json") {
        let mut log: serde_json::Value = serde_json::from_str(&printed).unwrap();
        for row in log["rows"].as_array_mut().unwrap() {
            let row = row.as_object_mut().unwrap();
            let reason = row.remove("reason").expect("a reason field");
            let description = row["description"].as_str().unwrap().to_string();
            row["description"] = v1(&description, reason.as_str().unwrap()).into();
        }
        let expected: serde_json::Value = serde_json::from_slice(expected).unwrap();
        assert_eq!(log, expected, "{file} read in v1's terms");
        return;
    }
    let rows: Vec<String> = printed
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let mut cols: Vec<&str> = line.split('\t').collect();
            let reason = cols.pop().unwrap();
            let description = cols.pop().unwrap();
            let v1_description = if i == 0 {
                assert_eq!((description, reason), ("description", "reason"));
                description.to_string()
            } else {
                v1(description, reason)
            };
            let mut cols: Vec<String> = cols.into_iter().map(String::from).collect();
            cols.push(v1_description);
            cols.join("\t") + "\n"
        })
        .collect();
    assert_eq!(
        rows.concat(),
        String::from_utf8_lossy(expected),
        "{file} read in v1's terms"
    );
}

/// Rows imported by the first format (run ids `nano-tsv-L{line}`, one tick
/// a row) are recognised by content: re-importing the very file adds no run
/// and changes none, and the export is the file again.
#[test]
fn a_reimport_into_a_legacy_ledger_adds_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join(".autoresearch")).unwrap();
    std::fs::copy(
        fixture().join("ledger.redb"),
        dir.join(".autoresearch/ledger.redb"),
    )
    .unwrap();
    // The file `make-ledger.sh` imported (see the fixture's README).
    let tsv = "commit\tval_bpb\tmemory_gb\tstatus\tdescription\na1b2c3d\t0.997900\t44.0\tkeep\tbaseline\nb2c3d4e\t0.993200\t44.2\tkeep\tincrease LR to 0.04\nc3d4e5f\t1.005000\t44.0\tdiscard\tswitch to GeLU activation\nd4e5f6a\t0.000000\t0.0\tcrash\tdouble model width (OOM)\ne5f6a7b\t0.992800\t44.1\tkeep\tsmaller warmup\n";
    std::fs::write(dir.join("results.tsv"), tsv).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .current_dir(dir)
            .env_remove("AUTORESEARCH_LEDGER")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let report: serde_json::Value = serde_json::from_str(&run(&[
        "ingest",
        "tsv",
        "results.tsv",
        "--experiment",
        "nano",
        "--json",
    ]))
    .unwrap();
    assert_eq!(report["imported"], 0, "{report}");
    assert_eq!(report["changed"], 0, "{report}");
    assert_eq!(report["already_present"], 5, "{report}");
    assert_eq!(
        run(&["log", "--experiment", "nano", "--format", "tsv"]),
        tsv
    );
}
