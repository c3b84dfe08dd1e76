//! The misbehaviours of issue #15 as the real loop meets them: a real git
//! repository, shell scripts as proposer and evaluator, the redb ledger,
//! `autoresearch run` with the `stat` comparator. The evaluator prints
//! `val: X` for the candidate's `score.txt` X, plus a fixed offset per
//! sample number (a known, repeatable noise), and can be told to print
//! `val: nan` on given calls or to fail a commit's repeats.

mod common;

use autoresearch_core::lifecycle::{Attempt, attempts};
use autoresearch_core::noise::NoiseModel;
use autoresearch_core::{ResultMeta, World};
use autoresearch_test_support::git::git;
use autoresearch_test_support::loop_repo::{LoopRepo, write_scores};
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_autoresearch");

/// The evaluator: counts its calls in `ctl/calls`; prints `val: nan` on the
/// calls listed in `ctl/fail_calls`; fails every sample but the first of a
/// score X when `ctl/fail_repeats_of_X` exists; else prints the score plus
/// line `sample % 4 + 1` of `ctl/offsets` (0 without the file).
fn evaluator(ctl: &Path) -> String {
    let c = ctl.display();
    format!(
        r#"k=$(cat {c}/calls 2>/dev/null || echo 0); k=$((k+1)); echo $k > {c}/calls
if grep -qx "$k" {c}/fail_calls 2>/dev/null; then echo "val: nan"; exit 0; fi
x=$(cat score.txt)
if [ -f {c}/fail_repeats_of_$x ] && [ "$AUTORESEARCH_SAMPLE" != 0 ]; then exit 1; fi
off=$(sed -n "$((AUTORESEARCH_SAMPLE % 4 + 1))p" {c}/offsets 2>/dev/null)
awk "BEGIN {{ print \"val: \" ($x + ${{off:-0}}) }}"
"#
    )
}

struct Repo {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    ctl: PathBuf,
}

impl Repo {
    /// Candidates score `scores` in turn (the branch tip scores 100); the
    /// proposer sleeps `propose_sleep` first; `compare` is the `[compare]` table.
    fn new(scores: &[u32], compare: &str, propose_sleep: &str) -> Repo {
        let LoopRepo { tmp, dir, ctl } = LoopRepo::new(|ctl| {
            let c = ctl.display();
            format!(
                r#"name = "exp"
branch = "main"

[propose]
command = '''
sleep {propose_sleep}
n=$(cat {c}/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}/n
sed -n "${{n}}p" {c}/scores > score.txt
'''
timeout = "60s"

[evaluate]
command = 'sh {c}/eval.sh'
timeout = "60s"
protect = ["autoresearch.toml"]

[compare]
{compare}

[run]
sandbox_writable = ["{c}"]
"#
            )
        });
        std::fs::write(ctl.join("eval.sh"), evaluator(&ctl)).unwrap();
        write_scores(&ctl, scores);
        Repo {
            _tmp: tmp,
            dir,
            ctl,
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = Command::new(BIN)
            .args(args)
            .current_dir(&self.dir)
            .env_remove("AUTORESEARCH_LEDGER")
            .env("USER", "tester")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "autoresearch {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    async fn world(&self) -> World {
        common::exp_world(&self.dir).await
    }

    fn head_score(&self) -> String {
        git(&self.dir, &["show", "main:score.txt"])
    }

    fn calls(&self) -> u32 {
        std::fs::read_to_string(self.ctl.join("calls"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

/// Each attempt's status, the samples taken of it as a candidate (a kept
/// one's later samples as the incumbent are not counted), and its reason.
fn summary(all: &[Attempt]) -> Vec<(String, usize, String)> {
    all.iter()
        .map(|a| {
            let o = a.outcome.clone().unwrap_or_default();
            let as_candidate = a
                .results
                .iter()
                .filter(|r| r.meta().is_some_and(|m| m.role == ResultMeta::CANDIDATE))
                .count();
            (o.status.to_string(), as_candidate, o.reason)
        })
        .collect()
}

#[tokio::test]
async fn a_nan_baseline_and_a_failed_remeasurement_do_not_block_later_candidates() {
    // Deterministic evaluator. Call 1 (the baseline) prints NaN; call 6
    // (the first fresh measurement of the first kept candidate, as the
    // incumbent) too. Candidates score 50 (keep), 40 (keep), 45 (discard).
    let r = Repo::new(&[50, 40, 45], "spec = \"stat:val:min\"", "0");
    std::fs::write(r.ctl.join("fail_calls"), "1\n6\n").unwrap();
    // The check would stop at the NaN baseline (as it should); this test
    // is about the loop, so it starts without it.
    r.ok(&["run", "--no-check", "--iterations", "3"]);
    let w = r.world().await;
    let all = attempts(&w, "exp");
    let s = summary(&all);
    let decided: Vec<&(String, usize, String)> = s
        .iter()
        .filter(|(st, _, _)| st == "keep" || st == "discard")
        .collect();
    assert_eq!(
        decided.iter().map(|d| d.0.as_str()).collect::<Vec<_>>(),
        ["keep", "keep", "discard"],
        "{s:#?}"
    );
    // A deterministic evaluator: one sample per candidate.
    assert!(decided.iter().all(|d| d.1 == 1), "{s:#?}");
    assert_eq!(r.head_score(), "40");
    // Baseline (NaN), its re-measurement, one repeat to learn the noise,
    // then per candidate one sample and, after each keep, the new
    // incumbent measured afresh (once failing): 9 evaluator calls.
    assert_eq!(r.calls(), 9, "{s:#?}");
    // The noise model: identical repeats, σ 0, stored and shown.
    let (e, _) = w.experiment("exp").unwrap();
    let model = w.get::<NoiseModel>(e).expect("a stored noise model");
    let val = model.metric("val").expect("val's noise");
    assert_eq!(val.sigma, 0.0, "{model:?}");
    let status = r.ok(&["status"]);
    assert!(
        status.contains("noise      val σ 0 (identical repeats)"),
        "{status}"
    );
}

#[tokio::test]
async fn an_aged_out_incumbent_history_does_not_exhaust_the_budget() {
    // 32 samples of the head (calibration), all older than max_age=1 s
    // when the candidate (the optimum) is measured: the incumbent is
    // measured afresh and the candidate kept.
    let r = Repo::new(
        &[10],
        "spec = \"stat:val:min:max_age=1\"\ncalibrate = 32",
        "1.5",
    );
    r.ok(&["run", "--iterations", "1"]);
    let w = r.world().await;
    let all = attempts(&w, "exp");
    let s = summary(&all);
    assert_eq!(s.len(), 2, "{s:#?}");
    assert_eq!(
        all[0].results.len(),
        32 + 1,
        "calibration plus one fresh sample: {s:#?}"
    );
    assert_eq!(s[1].0, "keep", "{s:#?}");
    assert_eq!(r.head_score(), "10");
}

#[tokio::test]
async fn failed_repeats_count_against_max_n_with_no_hidden_cap() {
    // A noisy evaluator (offsets 0, +0.3, -0.3, +0.1 by sample), the noise
    // calibrated on 4 samples of the head; a candidate close to the head
    // (99.9 vs 100) whose repeats all fail: exactly max_n=40 samples.
    let r = Repo::new(
        &[99],
        "spec = \"stat:val:min:max_n=40\"\ncalibrate = 4",
        "0",
    );
    std::fs::write(r.ctl.join("scores"), "99.9\n").unwrap();
    std::fs::write(r.ctl.join("offsets"), "0\n0.3\n-0.3\n0.1\n").unwrap();
    std::fs::write(r.ctl.join("fail_repeats_of_99.9"), "").unwrap();
    r.ok(&["run", "--iterations", "1"]);
    let w = r.world().await;
    let s = summary(&attempts(&w, "exp"));
    let cand = s.last().unwrap();
    assert_eq!(cand.0, "discard", "{s:#?}");
    assert_eq!(cand.1, 40, "{s:#?}");
    assert!(cand.2.contains("budget of 40"), "{}", cand.2);
    let status = r.ok(&["status"]);
    assert!(status.contains("noise      val σ"), "{status}");
}

#[tokio::test]
async fn scalar_after_stat_compares_like_with_like() {
    // Under stat, the head is calibrated to 4 samples (100, 100.3, 99.7,
    // 100.1: mean 100.025) and a far worse candidate discarded. Then a
    // scalar run: its candidate's one sample (100.05) meets the head's
    // latest sample (100.1), not the mean of four, and is kept.
    let r = Repo::new(&[200], "spec = \"stat:val:min\"\ncalibrate = 4", "0");
    std::fs::write(r.ctl.join("scores"), "200\n100.05\n").unwrap();
    std::fs::write(r.ctl.join("offsets"), "0\n0.3\n-0.3\n0.1\n").unwrap();
    r.ok(&["run", "--iterations", "1"]);
    r.ok(&["run", "--iterations", "1", "--comparator", "scalar:val:min"]);
    let w = r.world().await;
    let all = attempts(&w, "exp");
    let s = summary(&all);
    assert_eq!(s.len(), 3, "{s:#?}");
    assert_eq!(s[1].0, "discard", "{s:#?}");
    assert_eq!(s[2].0, "keep", "{s:#?}");
    let d = all[2].outcome.as_ref().unwrap().descriptor().unwrap();
    assert_eq!(d["incumbent"], serde_json::json!(100.1), "{d}");
    assert_eq!(r.head_score(), "100.05");
}
