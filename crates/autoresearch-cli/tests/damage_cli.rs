//! A damaged ledger file never makes a command panic: bytes flipped across a
//! real ledger, then `doctor`, `worlds`, `status` and `log` each exit 0 or 1
//! (never 101, a panic), and a failure names the ledger file.

use autoresearch_test_support::loop_repo::{LoopRepo, falling_scores_config};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_autoresearch");

fn run(r: &LoopRepo, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(&r.dir)
        .env_remove("AUTORESEARCH_LEDGER")
        .output()
        .unwrap()
}

#[test]
fn flipped_bytes_give_errors_naming_the_file_never_a_panic() {
    let r = LoopRepo::new(falling_scores_config);
    let first = run(&r, &["run", "--iterations", "3"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let ledger = r.dir.join(".autoresearch/ledger.redb");
    let pristine = std::fs::read(&ledger).unwrap();
    let doctor = run(&r, &["doctor"]);
    assert!(doctor.status.success(), "a sound ledger: {doctor:?}");
    let page = 4096;
    let mut damaged_runs = 0;
    for offset in (0..pristine.len())
        .step_by(page)
        .flat_map(|p| [p, p + 64, p + 1500])
    {
        if offset + 16 > pristine.len() {
            continue;
        }
        let mut bytes = pristine.clone();
        for b in &mut bytes[offset..offset + 16] {
            *b ^= 0xff;
        }
        std::fs::write(&ledger, &bytes).unwrap();
        for args in [&["doctor"][..], &["worlds"], &["status"], &["log"]] {
            let out = run(&r, args);
            let code = out.status.code();
            assert!(
                matches!(code, Some(0) | Some(1)),
                "{args:?} at offset {offset}: exit {code:?}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            if code == Some(1) {
                damaged_runs += 1;
                let err = String::from_utf8_lossy(&out.stderr);
                let said = format!("{err}{}", String::from_utf8_lossy(&out.stdout));
                assert!(
                    said.contains("ledger") || said.contains("PROBLEM"),
                    "{args:?} at offset {offset} does not say what is wrong: {said}"
                );
            }
        }
    }
    assert!(damaged_runs > 0, "some flips must be noticed");
    std::fs::write(&ledger, &pristine).unwrap();
    let again = run(&r, &["doctor"]);
    assert!(
        again.status.success(),
        "the restored file is sound: {again:?}"
    );
}
