//! The `stat` comparator with a noise model (the posterior rule), its budgets, and
//! the misbehaviours of issue #15 at the comparator's level: failed samples
//! count against `max_n`, an incumbent without a usable sample is measured
//! again, a deterministic evaluator needs one sample, the samples that
//! selected an incumbent are not its evidence, `scalar` compares like with
//! like.

use autoresearch_compare::{CompareSpec, Scalar, Stat};
use autoresearch_core::compare::{Evidence, Verdict};
use autoresearch_core::noise::{MetricNoise, NoiseModel};
use autoresearch_test_support::evidence::{evidence, evidence_at, samples};
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

fn model(sigma: f64, df: u32) -> NoiseModel {
    NoiseModel {
        experiment_name: "exp".into(),
        metrics: vec![MetricNoise {
            metric: "val".into(),
            sigma,
            df,
            groups: df,
            samples: 2 * df,
            method: "pooled-mad".into(),
        }],
        updated_at_ms: 0,
    }
}

fn with_noise(mut e: Evidence, m: &NoiseModel) -> Evidence {
    e.noise = Some(m.clone());
    e
}

fn vals(xs: &[f64]) -> Vec<serde_json::Value> {
    xs.iter().map(|x| json!({ "val": x })).collect()
}

#[test]
fn a_deterministic_evaluator_is_decided_on_one_sample_a_side() {
    let s = stat("stat:val:min");
    let m = model(0.0, 4);
    let inc = with_noise(samples("inc", "val", &[1.0]), &m);
    let better = with_noise(samples("c", "val", &[0.999]), &m);
    let worse = with_noise(samples("c", "val", &[1.0]), &m);
    let d = s.decide(&inc, &better).unwrap();
    assert_eq!(d.verdict, Verdict::Keep, "{}", d.reason);
    assert!(d.reason.contains("deterministic"), "{}", d.reason);
    let d = s.decide(&inc, &worse).unwrap();
    assert_eq!(d.verdict, Verdict::Discard, "{}", d.reason);
}

#[test]
fn an_unknown_noise_is_learnt_from_the_incumbent_first() {
    let s = stat("stat:val:min");
    let empty = NoiseModel::default();
    let inc = with_noise(samples("inc", "val", &[1.0]), &empty);
    let cand = with_noise(samples("c", "val", &[0.9]), &empty);
    let d = s.decide(&inc, &cand).unwrap();
    assert_eq!(
        d.verdict,
        Verdict::NeedMore {
            incumbent: 1,
            candidate: 0
        },
        "{}",
        d.reason
    );
    assert!(d.reason.contains("not known yet"), "{}", d.reason);
}

#[test]
fn far_calls_stop_after_one_sample_close_calls_sample_more() {
    let s = stat("stat:val:min");
    let m = model(0.01, 30);
    let inc = with_noise(samples("inc", "val", &[1.0, 1.0, 1.0, 1.0]), &m);
    for (cand, want) in [(0.95, Verdict::Keep), (1.03, Verdict::Discard)] {
        let d = s
            .decide(&inc, &with_noise(samples("c", "val", &[cand]), &m))
            .unwrap();
        assert_eq!(d.verdict, want, "{cand}: {}", d.reason);
    }
    let d = s
        .decide(&inc, &with_noise(samples("c", "val", &[0.996]), &m))
        .unwrap();
    assert_eq!(
        d.verdict,
        Verdict::NeedMore {
            incumbent: 0,
            candidate: 1
        },
        "{}",
        d.reason
    );
    let post = &d.descriptor["posterior"];
    let p = post["p_gain"].as_f64().unwrap();
    assert!(
        p > post["discard_at"].as_f64().unwrap() && p < post["keep_at"].as_f64().unwrap(),
        "{p}"
    );
}

#[test]
fn failed_samples_count_against_max_n_and_max_n_is_what_it_says() {
    // A candidate whose repeats fail: 1 good sample, then failures.
    let m = model(0.01, 30);
    // The incumbent has its 40 samples too, so nothing is left to take.
    let inc = with_noise(samples("inc", "val", &[1.0; 40]), &m);
    let mut outputs = vals(&[0.997]);
    outputs.extend((0..39).map(|_| json!({"_meta": {"exit_code": 1}})));
    let cand = with_noise(evidence_at("c", 10_000, &outputs), &m);
    let d = stat("stat:val:min:max_n=40").decide(&inc, &cand).unwrap();
    assert_eq!(d.verdict, Verdict::Discard, "{}", d.reason);
    assert!(d.reason.contains("budget of 40"), "{}", d.reason);
    assert_eq!(d.descriptor["spent"]["candidate"], json!(40));
    // One failure fewer: the budget has room for one more.
    let fewer = with_noise(evidence_at("c", 10_000, &outputs[..39]), &m);
    let d = stat("stat:val:min:max_n=40").decide(&inc, &fewer).unwrap();
    assert_eq!(
        d.verdict,
        Verdict::NeedMore {
            incumbent: 0,
            candidate: 1
        },
        "{}",
        d.reason
    );
}

#[test]
fn an_incumbent_whose_samples_failed_is_measured_again_within_max_n() {
    let s = stat("stat:val:min:max_n=3");
    let m = model(0.01, 30);
    let failed = json!({"_meta": {"exit_code": 1}});
    let cand = with_noise(evidence_at("c", 10_000, &vals(&[0.9])), &m);
    // The failed baseline (before the candidate) does not count against
    // this decision's budget.
    let inc = with_noise(evidence_at("inc", 0, std::slice::from_ref(&failed)), &m);
    let d = s.decide(&inc, &cand).unwrap();
    assert_eq!(
        d.verdict,
        Verdict::NeedMore {
            incumbent: 1,
            candidate: 0
        },
        "{}",
        d.reason
    );
    // Three failed re-measurements in this decision: the budget is spent.
    let mut inc = inc;
    inc.results
        .extend(evidence_at("inc", 11_000, &[failed.clone(), failed.clone(), failed]).results);
    let d = s.decide(&inc, &cand).unwrap();
    assert_eq!(d.verdict, Verdict::Discard, "{}", d.reason);
    assert!(d.reason.contains("max_n"), "{}", d.reason);
    // Once the evaluator works again, the next candidate is decided.
    let fixed = with_noise(evidence_at("inc", 20_000, &vals(&[1.0])), &m);
    let mut inc2 = inc.clone();
    inc2.results.extend(fixed.results);
    let cand2 = with_noise(evidence_at("c2", 19_000, &vals(&[0.9])), &m);
    let d = s.decide(&inc2, &cand2).unwrap();
    assert_eq!(d.verdict, Verdict::Keep, "{}", d.reason);
}

#[test]
fn a_large_aged_out_incumbent_history_does_not_spend_the_candidates_budget() {
    // 30 stored incumbent samples, all older than max_age: the incumbent is
    // measured afresh, one at a time, and the candidate is decided.
    let s = stat("stat:val:min:max_age=1");
    let m = model(0.01, 30);
    let old = with_noise(evidence_at("inc", 0, &vals(&[1.0; 30])), &m);
    let cand = with_noise(evidence_at("c", 3_600_000, &vals(&[0.9])), &m);
    let d = s.decide(&old, &cand).unwrap();
    assert_eq!(
        d.verdict,
        Verdict::NeedMore {
            incumbent: 1,
            candidate: 0
        },
        "{}",
        d.reason
    );
    let mut fresh = old.clone();
    fresh
        .results
        .extend(evidence_at("inc", 3_600_500, &vals(&[1.0])).results);
    let d = s.decide(&fresh, &cand).unwrap();
    assert_eq!(d.verdict, Verdict::Keep, "{}", d.reason);
    assert_eq!(d.descriptor["n"]["incumbent"], json!(1));
}

#[test]
fn the_samples_that_selected_an_incumbent_are_not_its_evidence() {
    let s = stat("stat:val:min");
    let m = model(0.01, 30);
    let selected: Vec<_> = [0.95, 0.94]
        .iter()
        .map(|x| json!({"val": x, "_meta": {"role": "candidate"}}))
        .collect();
    let inc = with_noise(evidence("inc", &selected), &m);
    let cand = with_noise(evidence_at("c", 10_000, &vals(&[0.96])), &m);
    let d = s.decide(&inc, &cand).unwrap();
    assert_eq!(
        d.verdict,
        Verdict::NeedMore {
            incumbent: 1,
            candidate: 0
        },
        "{}",
        d.reason
    );
    assert!(
        d.reason.contains("while it was a candidate"),
        "{}",
        d.reason
    );
}

#[test]
fn scalar_compares_the_same_number_of_samples_a_side() {
    let s = match CompareSpec::parse("scalar:val:min").unwrap() {
        CompareSpec::Scalar(s) => Scalar::new(s),
        _ => unreachable!(),
    };
    // The incumbent's mean of three is 1.2; its latest sample is 1.4.
    let inc = samples("inc", "val", &[1.0, 1.2, 1.4]);
    let d = s.decide(&inc, &samples("c", "val", &[1.3]));
    assert_eq!(d.verdict, Verdict::Keep, "{}", d.reason);
    assert_eq!(d.descriptor["incumbent"], json!(1.4));
    // Two a side: the incumbent's latest two (mean 1.3).
    let d = s.decide(&inc, &samples("c", "val", &[1.25, 1.33]));
    assert_eq!(d.verdict, Verdict::Keep, "{}", d.reason);
    assert_eq!(d.descriptor["n"], json!({"incumbent": 2, "candidate": 2}));
}

/// Drives the comparator as the loop does, with a known σ, until a
/// verdict. The candidate's samples, and whether it was kept.
fn trial(s: &Stat, rng: &mut StdRng, effect_sigma: f64, prior: usize) -> (Verdict, usize) {
    let sigma = 0.01;
    let m = model(sigma, 40);
    let inc_dist = Normal::new(1.0, sigma).unwrap();
    let cand_dist = Normal::new(1.0 - effect_sigma * sigma, sigma).unwrap();
    let mut inc: Vec<f64> = (0..prior).map(|_| inc_dist.sample(rng)).collect();
    let mut cand: Vec<f64> = vec![cand_dist.sample(rng)];
    for _ in 0..100 {
        let d = s
            .decide(
                &with_noise(samples("inc", "val", &inc), &m),
                &with_noise(samples("c", "val", &cand), &m),
            )
            .unwrap();
        match d.verdict {
            Verdict::NeedMore {
                incumbent,
                candidate,
            } => {
                assert!(incumbent + candidate > 0, "{}", d.reason);
                inc.extend((0..incumbent).map(|_| inc_dist.sample(rng)));
                cand.extend((0..candidate).map(|_| cand_dist.sample(rng)));
            }
            v => return (v, cand.len()),
        }
    }
    panic!("no decision after 100 looks");
}

#[test]
fn the_posterior_rule_keeps_rarely_without_a_gain_and_spends_little_on_far_calls() {
    // alpha is a posterior level: over up to max_n looks, a candidate of no
    // gain at all is kept somewhat more often (5.5% at alpha=0.02 in this
    // simulation), one that is worse almost never.
    let s = stat("stat:val:min:alpha=0.02");
    let mut rng = StdRng::seed_from_u64(15);
    let n = 400;
    let run = |effect: f64, rng: &mut StdRng| {
        let t: Vec<(Verdict, usize)> = (0..n).map(|_| trial(&s, rng, effect, 5)).collect();
        let kept = t.iter().filter(|(v, _)| *v == Verdict::Keep).count() as f64 / n as f64;
        let mean_n = t.iter().map(|(_, k)| *k).sum::<usize>() as f64 / n as f64;
        (kept, mean_n)
    };
    let (null_keep, _) = run(0.0, &mut rng);
    assert!(null_keep <= 0.08, "kept {null_keep} of no-gain candidates");
    let (worse_keep, worse_n) = run(-2.0, &mut rng);
    assert!(
        worse_keep <= 0.01,
        "kept {worse_keep} of 2σ-worse candidates"
    );
    assert!(worse_n < 1.5, "{worse_n} samples on a 2σ-worse candidate");
    let (big_keep, _) = run(3.0, &mut rng);
    assert!(big_keep >= 0.95, "kept {big_keep} of 3σ gains");
}

#[test]
fn a_deterministic_evaluator_gets_one_sample_at_a_time_whatever_parallel_allows() {
    let s = stat("stat:val:min:parallel=8");
    // Nothing repeated yet: one incumbent repeat, which may show σ = 0.
    let empty = NoiseModel::default();
    let inc = with_noise(samples("inc", "val", &[1.0]), &empty);
    let d = s
        .decide(&inc, &with_noise(samples("c", "val", &[0.9]), &empty))
        .unwrap();
    assert_eq!(
        d.verdict,
        Verdict::NeedMore {
            incumbent: 1,
            candidate: 0
        },
        "{}",
        d.reason
    );
    // Identical repeats: decided on that one sample a side, nothing more.
    let m = model(0.0, 1);
    let inc = with_noise(samples("inc", "val", &[1.0, 1.0]), &m);
    for (cand, want) in [(0.9, Verdict::Keep), (1.0, Verdict::Discard)] {
        let d = s
            .decide(&inc, &with_noise(samples("c", "val", &[cand]), &m))
            .unwrap();
        assert_eq!(d.verdict, want, "{cand}: {}", d.reason);
    }
    // No candidate sample yet: one each.
    let d = s
        .decide(&inc, &with_noise(samples("c", "val", &[]), &m))
        .unwrap();
    assert_eq!(
        d.verdict,
        Verdict::NeedMore {
            incumbent: 0,
            candidate: 1
        },
        "{}",
        d.reason
    );
}

#[test]
fn a_noisy_evaluator_gets_the_samples_the_rule_still_needs_at_once() {
    let s = stat("stat:val:min:parallel=4");
    // σ > 0 from one repeat: the two repeats still wanted, together.
    let inc = with_noise(samples("inc", "val", &[1.0, 1.01]), &model(0.01, 1));
    let cand = with_noise(samples("c", "val", &[0.99]), &model(0.01, 1));
    let d = s.decide(&inc, &cand).unwrap();
    assert_eq!(
        d.verdict,
        Verdict::NeedMore {
            incumbent: 2,
            candidate: 0
        },
        "{}",
        d.reason
    );
    // A close call: the candidate's next samples at once, at most 4 in all.
    let m = model(0.01, 30);
    let inc = with_noise(samples("inc", "val", &[1.0, 1.0, 1.0, 1.0]), &m);
    let close = with_noise(samples("c", "val", &[0.996]), &m);
    let d = s.decide(&inc, &close).unwrap();
    let Verdict::NeedMore {
        incumbent,
        candidate,
    } = d.verdict
    else {
        panic!("{}", d.reason);
    };
    assert!(candidate >= 2 && incumbent + candidate <= 4, "{}", d.reason);
    // The same look one sample at a time asks for the first of them only.
    let one = stat("stat:val:min").decide(&inc, &close).unwrap();
    assert_eq!(
        one.verdict,
        Verdict::NeedMore {
            incumbent: 0,
            candidate: 1
        }
    );
    // Within max_n: a candidate with 5 of its 6 spent gets 1 more.
    let near = with_noise(samples("c", "val", &[0.996; 5]), &m);
    let inc6 = with_noise(samples("inc", "val", &[1.0; 6]), &m);
    let d = stat("stat:val:min:parallel=4:max_n=6:alpha=0.001:beta=0.001:worth=0")
        .decide(&inc6, &near)
        .unwrap();
    assert_eq!(
        d.verdict,
        Verdict::NeedMore {
            incumbent: 0,
            candidate: 1
        },
        "{}",
        d.reason
    );
}

#[test]
fn samples_asked_for_at_once_keep_the_rule_s_error_rates() {
    let s = stat("stat:val:min:alpha=0.02:parallel=4");
    let mut rng = StdRng::seed_from_u64(18);
    let n = 300;
    let run = |effect: f64, rng: &mut StdRng| {
        let t: Vec<(Verdict, usize)> = (0..n).map(|_| trial(&s, rng, effect, 5)).collect();
        t.iter().filter(|(v, _)| *v == Verdict::Keep).count() as f64 / n as f64
    };
    let null_keep = run(0.0, &mut rng);
    assert!(null_keep <= 0.08, "kept {null_keep} of no-gain candidates");
    let big_keep = run(3.0, &mut rng);
    assert!(big_keep >= 0.95, "kept {big_keep} of 3σ gains");
}

#[test]
fn parallel_is_a_stat_key_of_at_least_one() {
    let spec = CompareSpec::parse("stat:val:min:parallel=4").unwrap();
    assert_eq!(spec.to_string(), "stat:val:min:parallel=4");
    assert_eq!(
        CompareSpec::parse("stat:val:min").unwrap().to_string(),
        "stat:val:min"
    );
    let err = CompareSpec::parse("stat:val:min:parallel=0").unwrap_err();
    assert!(err.to_string().contains("parallel"), "{err}");
}
