//! The noise-aware comparator: fixed cases, then seeded trials with a
//! synthetic noisy evaluator of known effect.

use autoresearch_compare::spec::{Direction, StatSpec};
use autoresearch_compare::{CompareSpec, Stat};
use autoresearch_core::compare::Verdict;
use autoresearch_test_support::evidence;
use autoresearch_test_support::evidence::{evidence_at, samples};
use rand::SeedableRng;
use rand::distributions::Distribution;
use rand::rngs::StdRng;
use serde_json::json;
use statrs::distribution::Normal;

fn stat(spec: &str) -> Stat {
    match CompareSpec::parse(spec).unwrap() {
        CompareSpec::Stat(s) => Stat::new(s),
        other => panic!("{spec} is not a stat spec: {other:?}"),
    }
}

/// Decides `inc` vs `cand` samples of `val_bpb` (or `score` for a max spec)
/// and expects the verdict and a fragment of the reason.
fn check(spec: &str, inc: &[f64], cand: &[f64], verdict: Verdict, reason: &str) {
    let metric = if spec.split(':').nth(2) == Some("max") {
        "score"
    } else {
        "val_bpb"
    };
    let d = stat(spec)
        .decide(&samples("inc", metric, inc), &samples("cand", metric, cand))
        .unwrap();
    assert_eq!(
        d.verdict, verdict,
        "{spec} {inc:?} vs {cand:?}: {}",
        d.reason
    );
    assert!(
        d.reason.contains(reason),
        "{spec}: reason {:?} lacks {reason:?}",
        d.reason
    );
}

#[test]
fn stat_cases() {
    use Verdict::{Discard, Keep, NeedMore};
    let base = [1.0, 1.01, 0.99, 1.0, 1.0];
    type Case<'a> = (&'a str, &'a [f64], &'a [f64], Verdict, &'a str);
    let cases: &[Case] = &[
        (
            "stat:val_bpb:min",
            &[],
            &[],
            NeedMore {
                incumbent: 3,
                candidate: 3,
            },
            "the first test needs 3 each",
        ),
        // Incumbent samples are reused: only the candidate is asked for more.
        (
            "stat:val_bpb:min",
            &base,
            &[],
            NeedMore {
                incumbent: 0,
                candidate: 3,
            },
            "incumbent 5, candidate 0",
        ),
        (
            "stat:val_bpb:min",
            &base[..3],
            &[0.9],
            NeedMore {
                incumbent: 0,
                candidate: 2,
            },
            "candidate 1",
        ),
        (
            "stat:val_bpb:min:min_n=4",
            &base[..3],
            &[0.9],
            NeedMore {
                incumbent: 1,
                candidate: 3,
            },
            "needs 4 each",
        ),
        (
            "stat:val_bpb:min",
            &base,
            &[0.9, 0.91, 0.89],
            Keep,
            "significant improvement",
        ),
        (
            "stat:val_bpb:min",
            &base,
            &[1.1, 1.11, 1.09],
            Discard,
            "no sign of improvement",
        ),
        (
            "stat:val_bpb:min",
            &[1.0, 1.02, 0.98],
            &[0.99, 1.01, 0.985],
            NeedMore {
                incumbent: 2,
                candidate: 2,
            },
            "sampling to 5 per side",
        ),
        (
            "stat:val_bpb:min:batch=5",
            &[1.0, 1.02, 0.98],
            &[0.99, 1.01, 0.985],
            NeedMore {
                incumbent: 5,
                candidate: 5,
            },
            "sampling to 8 per side",
        ),
        // The budget: undecided at max_n per side is a discard.
        (
            "stat:val_bpb:min:max_n=4",
            &[1.0, 1.02, 0.98, 1.0],
            &[0.99, 1.01, 0.985, 0.995],
            Discard,
            "within the budget of 4 samples",
        ),
        (
            "stat:val_bpb:min:max_n=4",
            &[1.0, 1.02, 0.98],
            &[0.99, 1.01, 0.985, 0.995],
            NeedMore {
                incumbent: 1,
                candidate: 0,
            },
            "sampling to 4",
        ),
        // Noise-free evaluators: the sign decides.
        (
            "stat:val_bpb:min",
            &[1.0, 1.0, 1.0],
            &[1.0, 1.0, 1.0],
            Discard,
            "no sign of improvement",
        ),
        (
            "stat:val_bpb:min",
            &[1.0, 1.0, 1.0],
            &[0.9, 0.9, 0.9],
            Keep,
            "significant",
        ),
        // Direction and minimum delta.
        (
            "stat:score:max",
            &base,
            &[1.1, 1.11, 1.09],
            Keep,
            "significant",
        ),
        (
            "stat:score:max",
            &base,
            &[0.9, 0.91, 0.89],
            Discard,
            "no sign",
        ),
        (
            "stat:val_bpb:min:delta=0.2",
            &base,
            &[0.9, 0.91, 0.89],
            Discard,
            "no sign",
        ),
        // futility=1 never stops early: a clearly worse candidate runs to the budget.
        (
            "stat:val_bpb:min:futility=1",
            &base,
            &[1.1, 1.11, 1.09],
            NeedMore {
                incumbent: 0,
                candidate: 2,
            },
            "undecided",
        ),
    ];
    for (spec, inc, cand, verdict, reason) in cases {
        check(spec, inc, cand, verdict.clone(), reason);
    }
}

#[test]
fn a_candidate_without_the_metric_is_discarded_an_incumbent_without_it_measured_again() {
    let s = stat("stat:val_bpb:min");
    let inc = samples("inc", "val_bpb", &[1.0, 1.0, 1.0]);
    let cand = evidence::evidence("cand", &[json!({"loss": 3})]);
    let d = s.decide(&inc, &cand).unwrap();
    assert_eq!(d.verdict, Verdict::Discard);
    assert_eq!(d.reason, "candidate has 1 results but no val_bpb");
    // A failed (or NaN) incumbent sample is no evidence, and no verdict
    // either: the incumbent is measured again (min_n samples without a
    // noise model).
    let d = s.decide(&cand, &inc).unwrap();
    assert_eq!(
        d.verdict,
        Verdict::NeedMore {
            incumbent: 3,
            candidate: 0
        },
        "{}",
        d.reason
    );
    assert!(
        d.reason
            .starts_with("incumbent has 1 results but no usable val_bpb"),
        "{}",
        d.reason
    );
}

#[test]
fn old_incumbent_samples_age_out_so_the_incumbent_is_measured_again() {
    let s = stat("stat:val_bpb:min:max_age=60");
    let vals = |xs: &[f64]| xs.iter().map(|x| json!({"val_bpb": x})).collect::<Vec<_>>();
    // Incumbent measured at t=0..4 s; the candidate an hour later.
    let inc = evidence_at("inc", 0, &vals(&[1.0, 1.01, 0.99, 1.0, 1.0]));
    let cand = evidence_at("cand", 3_600_000, &vals(&[0.9, 0.91, 0.89]));
    let d = s.decide(&inc, &cand).unwrap();
    assert_eq!(
        d.verdict,
        Verdict::NeedMore {
            incumbent: 3,
            candidate: 0
        },
        "{}",
        d.reason
    );
    // Fresh incumbent samples taken beside the candidate's count again.
    let mut fresh = inc.clone();
    fresh
        .results
        .extend(evidence_at("inc", 3_590_000, &vals(&[1.0, 1.01, 0.99])).results);
    let d = s.decide(&fresh, &cand).unwrap();
    assert_eq!(d.verdict, Verdict::Keep, "{}", d.reason);
    assert_eq!(d.descriptor["n"]["incumbent"], json!(3));
}

#[test]
fn stat_descriptor_holds_n_means_spread_ci_and_p_value() {
    let d = stat("stat:val_bpb:min")
        .decide(
            &samples("inc", "val_bpb", &[1.0, 1.01, 0.99, 1.0, 1.0]),
            &samples("cand", "val_bpb", &[0.9, 0.91, 0.89]),
        )
        .unwrap();
    let x = &d.descriptor;
    assert_eq!(x["n"], json!({"incumbent": 5, "candidate": 3}));
    assert!((x["mean"]["incumbent"].as_f64().unwrap() - 1.0).abs() < 1e-12);
    assert!((x["mean"]["candidate"].as_f64().unwrap() - 0.9).abs() < 1e-12);
    assert!((x["sd"]["candidate"].as_f64().unwrap() - 0.01).abs() < 1e-12);
    let (lo, hi) = (
        x["ci"]["low"].as_f64().unwrap(),
        x["ci"]["high"].as_f64().unwrap(),
    );
    assert!(
        lo > 0.07 && lo < 0.1 && hi > 0.1 && hi < 0.13,
        "ci {lo}..{hi}"
    );
    assert_eq!(x["ci"]["level"], json!(0.95));
    let p = x["p_value"].as_f64().unwrap();
    assert!(p > 0.0 && p < 0.005, "p {p}");
    assert_eq!(x["alpha_per_look"], json!(0.005));
}

/// What one simulated comparison spent and concluded.
struct Trial {
    verdict: Verdict,
    candidate_samples: usize,
    incumbent_samples: usize,
}

/// Drives the comparator as the loop does: take the samples it asks for
/// from a normal evaluator (mean 1, or 1 - effect for the candidate), until
/// it keeps or discards. `prior` incumbent samples exist before the first look.
fn trial(s: &Stat, rng: &mut StdRng, effect_sd: f64, prior: usize) -> Trial {
    let sd = 0.0007; // karpathy's seed-to-seed spread of val_bpb
    let inc_dist = Normal::new(1.0, sd).unwrap();
    let cand_dist = Normal::new(1.0 - effect_sd * sd, sd).unwrap();
    let mut inc: Vec<f64> = (0..prior).map(|_| inc_dist.sample(rng)).collect();
    let mut cand: Vec<f64> = Vec::new();
    let mut taken = 0;
    for _ in 0..100 {
        let d = s
            .decide(
                &samples("inc", "val_bpb", &inc),
                &samples("cand", "val_bpb", &cand),
            )
            .unwrap();
        match d.verdict {
            Verdict::NeedMore {
                incumbent,
                candidate,
            } => {
                assert!(
                    incumbent + candidate > 0,
                    "NeedMore asks for nothing: {}",
                    d.reason
                );
                taken += incumbent as usize;
                inc.extend((0..incumbent).map(|_| inc_dist.sample(rng)));
                cand.extend((0..candidate).map(|_| cand_dist.sample(rng)));
            }
            verdict => {
                return Trial {
                    verdict,
                    candidate_samples: cand.len(),
                    incumbent_samples: taken,
                };
            }
        }
    }
    panic!("no decision after 100 looks");
}

struct Summary {
    rate: f64,
    mean_candidate: f64,
    mean_incumbent: f64,
}

fn run_trials(spec: &str, effect_sd: f64, prior: usize, want: Verdict, seed: u64) -> Summary {
    let s = stat(spec);
    let mut rng = StdRng::seed_from_u64(seed);
    let n = 400;
    let trials: Vec<Trial> = (0..n)
        .map(|_| trial(&s, &mut rng, effect_sd, prior))
        .collect();
    let hits = trials.iter().filter(|t| t.verdict == want).count();
    let summary = Summary {
        rate: hits as f64 / n as f64,
        mean_candidate: trials.iter().map(|t| t.candidate_samples).sum::<usize>() as f64 / n as f64,
        mean_incumbent: trials.iter().map(|t| t.incumbent_samples).sum::<usize>() as f64 / n as f64,
    };
    println!(
        "{spec}: effect {effect_sd} sd, {prior} prior incumbent samples: {} {:.1}% of {n}, mean samples candidate {:.2}, incumbent {:.2}",
        want.as_str(),
        100.0 * summary.rate,
        summary.mean_candidate,
        summary.mean_incumbent
    );
    summary
}

#[test]
fn keeps_a_two_sd_improvement_and_rejects_noise_in_95_percent_of_trials() {
    for (prior, seed) in [(0, 1), (10, 2)] {
        let keep = run_trials("stat:val_bpb:min", 2.0, prior, Verdict::Keep, seed);
        assert!(
            keep.rate >= 0.95,
            "kept a 2 sd improvement in only {:.1}%",
            100.0 * keep.rate
        );
        let reject = run_trials("stat:val_bpb:min", 0.0, prior, Verdict::Discard, seed + 100);
        assert!(
            reject.rate >= 0.95,
            "rejected noise in only {:.1}%",
            100.0 * reject.rate
        );
        assert!(keep.mean_candidate <= StatSpec::DEFAULT_MAX_SAMPLES as f64);
        assert!(reject.mean_candidate <= StatSpec::DEFAULT_MAX_SAMPLES as f64);
    }
    // A candidate that is truly worse is rejected too.
    let worse = run_trials("stat:val_bpb:min", -2.0, 0, Verdict::Discard, 7);
    assert!(
        worse.rate >= 0.99,
        "rejected a worse candidate in only {:.1}%",
        100.0 * worse.rate
    );
}

#[test]
fn direction_is_respected_in_trials() {
    let s = StatSpec::new("val_bpb", Direction::Maximize);
    let cmp = Stat::new(s);
    let mut rng = StdRng::seed_from_u64(3);
    // A candidate lower by 3 sd is worse when higher is better.
    let kept = (0..100)
        .filter(|_| trial(&cmp, &mut rng, 3.0, 0).verdict == Verdict::Keep)
        .count();
    assert!(kept <= 1, "kept {kept} of 100 worse candidates");
}
