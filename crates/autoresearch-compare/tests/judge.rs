//! The judge comparator with real child processes.

use autoresearch_compare::from_spec;
use autoresearch_compare::judge::parse_verdict;
use autoresearch_core::compare::{Decision, Evidence, Verdict};
use autoresearch_test_support::evidence;
use serde_json::json;
use std::time::{Duration, Instant};

fn sides() -> (Evidence, Evidence) {
    let inc = evidence::samples("inc", "val_bpb", &[1.0]);
    let mut cand = evidence::samples("cand", "val_bpb", &[0.9]);
    cand.diff = Some("--- a/train.py\n+++ b/train.py\n-lr = 1\n+lr = 2\n".into());
    (inc, cand)
}

async fn judge(command: &str) -> Decision {
    let (inc, cand) = sides();
    from_spec(&format!("judge:timeout=5:{command}"))
        .unwrap()
        .compare(&inc, &cand)
        .await
        .unwrap()
}

#[tokio::test]
async fn judge_cases() {
    use Verdict::{Discard, Keep};
    let cases: &[(&str, Verdict, &str)] = &[
        (
            r#"echo '{"verdict":"keep","reason":"cleaner and faster"}'"#,
            Keep,
            "judge: cleaner and faster",
        ),
        (
            r#"echo '{"verdict":"discard","reason":"breaks the API"}'"#,
            Discard,
            "judge: breaks the API",
        ),
        (
            r#"echo '{"verdict":"keep"}'"#,
            Keep,
            "judge: keep (no reason given)",
        ),
        // Chatter before the verdict line is fine: the last JSON line counts.
        (
            r#"echo thinking...; echo '{"verdict":"discard","reason":"first"}'; echo '{"verdict":"keep","reason":"second"}'"#,
            Keep,
            "second",
        ),
        // The judge sees both sides on stdin and in a file.
        (
            r#"grep -q '"commit":"cand-commit"' && grep -q '"commit":"inc-commit"' "$AUTORESEARCH_JUDGE_INPUT" && grep -q '+lr = 2' "$AUTORESEARCH_JUDGE_INPUT" && grep -q '"val_bpb":0.9' "$AUTORESEARCH_JUDGE_INPUT" && echo '{"verdict":"keep","reason":"saw both"}'"#,
            Keep,
            "saw both",
        ),
        // A bounded tail still finds a verdict after a megabyte of output.
        (
            r#"head -c 1000000 /dev/zero | tr '\0' x; echo; echo '{"verdict":"keep","reason":"after noise"}'"#,
            Keep,
            "after noise",
        ),
        // Failing and malformed judges never promote.
        (
            "echo not json",
            Discard,
            "judge failed: judge printed no JSON verdict object: \"not json\"",
        ),
        ("true", Discard, "judge failed: judge printed nothing"),
        (
            r#"echo '{"verdict":"maybe","reason":"unsure"}'"#,
            Discard,
            "judge verdict must be \"keep\" or \"discard\", got \"maybe\"",
        ),
        (r#"echo '{"verdict":true}'"#, Discard, "got true"),
        (
            r#"echo '{"reason":"forgot"}'"#,
            Discard,
            "judge output has no \"verdict\" key",
        ),
        (r#"echo '["keep"]'"#, Discard, "no JSON verdict object"),
        (
            r#"echo '{"verdict":"keep","reason":"ok"}'; exit 3"#,
            Discard,
            "judge failed: exited with status 3",
        ),
        ("kill -9 $$", Discard, "judge failed: killed by a signal"),
        (
            "/nonexistent/judge-binary",
            Discard,
            "exited with status 127",
        ),
    ];
    for (command, verdict, reason) in cases {
        let d = judge(command).await;
        assert_eq!(&d.verdict, verdict, "{command}: {}", d.reason);
        assert!(
            d.reason.contains(reason),
            "{command}: reason {:?} lacks {reason:?}",
            d.reason
        );
        assert!(
            d.descriptor["comparator"]
                .as_str()
                .unwrap()
                .starts_with("judge:")
        );
    }
}

#[tokio::test]
async fn a_failing_judge_keeps_its_stderr_in_the_descriptor() {
    let d = judge("echo 'model not found' >&2; exit 2").await;
    assert_eq!(d.verdict, Verdict::Discard);
    assert_eq!(d.descriptor["exit_code"], json!(2));
    assert_eq!(d.descriptor["stderr_tail"], json!("model not found\n"));
    assert_eq!(d.descriptor["error"], json!("exited with status 2"));
}

#[tokio::test]
async fn a_judge_that_times_out_is_killed_with_its_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("grandchild.pid");
    // A grandchild that ignores SIGTERM and would outlive the judge.
    let command = format!(
        "sh -c 'trap \"\" TERM; echo $$ > {}; sleep 60' & sleep 60",
        pidfile.display()
    );
    let (inc, cand) = sides();
    let started = Instant::now();
    let d = from_spec(&format!("judge:timeout=1:{command}"))
        .unwrap()
        .compare(&inc, &cand)
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the timeout bounded the judge"
    );
    assert_eq!(d.verdict, Verdict::Discard);
    assert_eq!(d.reason, "judge failed: timed out after 1 s");
    assert_eq!(d.descriptor["timed_out"], json!(true));
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The grandchild is gone (reaped by init) within a few seconds.
    let deadline = Instant::now() + Duration::from_secs(5);
    let alive = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
    };
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(pid), "grandchild {pid} survived the judge's timeout");
}

#[test]
fn parse_verdict_cases() {
    let ok = |s: &str| parse_verdict(s).map(|v| (v.keep, v.reason));
    assert_eq!(
        ok(r#"{"verdict":"keep","reason":"r"}"#),
        Ok((true, "r".into()))
    );
    assert_eq!(
        ok("  {\"verdict\": \" discard \"}\n"),
        Ok((false, String::new()))
    );
    assert_eq!(
        ok("{\n  \"verdict\": \"keep\",\n  \"reason\": \"pretty-printed\"\n}\n"),
        Ok((true, "pretty-printed".into()))
    );
    assert_eq!(
        ok(r#"{"verdict":"keep","reason":{"why":1}}"#),
        Ok((true, r#"{"why":1}"#.into()))
    );
    assert!(ok("").unwrap_err().contains("printed nothing"));
    assert!(
        ok("{\"verdict\": \"KEEP\"}")
            .unwrap_err()
            .contains("got \"KEEP\"")
    );
}

#[tokio::test]
async fn a_cancelled_comparison_kills_the_judge_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("judge.pid");
    // The grandchild's pid: killing only `sh` would leave it running.
    let command = format!("sleep 60 & echo $! > {}; wait", pidfile.display());
    let (inc, cand) = sides();
    let cmp = from_spec(&format!("judge:timeout=60:{command}")).unwrap();
    // Give up on the comparison after the judge started: its future is dropped.
    let run = cmp.compare(&inc, &cand);
    let cancelled = tokio::time::timeout(Duration::from_millis(1500), run).await;
    assert!(cancelled.is_err(), "the judge was still running");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let alive = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
    };
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(pid), "judge {pid} survived the cancelled comparison");
}
