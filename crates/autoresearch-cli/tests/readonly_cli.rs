//! Read commands work on a ledger in a read-only filesystem (a read-only
//! bind mount in a private mount namespace, made with `unshare`), and a
//! write command there fails naming the cause and the file.

use autoresearch_test_support::loop_repo::{LoopRepo, falling_scores_config};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_autoresearch");

/// Runs `autoresearch args` in `dir` with `ro` mounted read-only over itself.
fn in_read_only(dir: &std::path::Path, ro: &std::path::Path, args: &[&str]) -> Output {
    let script = r#"ro="$1"; shift; mount --bind "$ro" "$ro" && mount -o remount,ro,bind "$ro" && exec "$@""#;
    Command::new("unshare")
        .args([
            "--user",
            "--map-root-user",
            "--mount",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(ro)
        .arg(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("AUTORESEARCH_LEDGER")
        .output()
        .expect("unshare (util-linux) runs")
}

#[test]
fn read_commands_work_on_a_read_only_filesystem() {
    let r = LoopRepo::new(falling_scores_config);
    let out = Command::new(BIN)
        .args(["run", "--iterations", "2"])
        .current_dir(&r.dir)
        .env_remove("AUTORESEARCH_LEDGER")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let state = r.dir.join(".autoresearch");
    // The mount really is read-only.
    let probe = in_read_only(&r.dir, &state, &["--version"]);
    assert!(probe.status.success(), "{probe:?}");
    let touch = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c"])
        .arg(r#"mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" && touch "$1/x""#)
        .args(["sh"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(!touch.status.success(), "the bind mount must refuse writes");
    for args in [
        &["status"][..],
        &["log"],
        &["log", "--json"],
        &["worlds"],
        &["runs", "--world", "autoresearch:exp"],
        &["doctor"],
    ] {
        let out = in_read_only(&r.dir, &state, args);
        assert!(
            out.status.success(),
            "{args:?} on a read-only filesystem: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A command that writes says why it cannot, and where.
    let out = in_read_only(&r.dir, &state, &["run", "--iterations", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("Read-only file system") || err.contains("read-only"),
        "{err}"
    );
    assert!(err.contains(".autoresearch"), "names the file: {err}");
}
