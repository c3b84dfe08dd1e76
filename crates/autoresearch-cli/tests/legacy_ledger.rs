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
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&expected),
            "autoresearch {args:?} no longer prints expected/{file}"
        );
        assert_eq!(out.stdout, expected, "expected/{file}, byte for byte");
    }
}
