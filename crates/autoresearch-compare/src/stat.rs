//! The noise-aware comparator.
//!
//! With the experiment's noise model ([`Evidence::noise`]: σ of one
//! evaluation, pooled over every repeated sample of the experiment), it
//! decides each candidate by the posterior probability of improvement, a
//! Bayesian sequential rule (the normal-normal conjugate model of Gelman et
//! al., "Bayesian Data Analysis", 3rd ed., §2.5; as a stopping rule for
//! success and futility, Spiegelhalter, Abrams & Myles, "Bayesian
//! approaches to clinical trials and health-care evaluation", 2004, §6.6):
//! the true improvement has the prior N(0, (`effect`·σ)²); the observed
//! difference of means has variance σ²(1/n_i + 1/n_c). After each sample
//! it keeps once P(gain > `min_delta`) ≥ 1 − `alpha`, discards once it is
//! ≤ `beta` (futility), and otherwise asks for one more sample of the side
//! whose next sample tells most (the incumbent's, which later candidates
//! reuse, while it has no more samples than the candidate). With
//! `parallel = k` > 1 and a noisy evaluator it asks for up to k samples at
//! once (run side by side where the executor can, as on Slurm): those its
//! one-at-a-time looks would take before the first look predicted to
//! decide, were the means to stay as they are; while σ is still being
//! learnt, the incumbent repeats still wanted. Far calls stop
//! after one sample a side, close calls sample on up to `max_n`; a
//! deterministic evaluator (σ = 0) is decided by the sign of one sample
//! each. The prior's shrinkage toward 0 is what keeps repeated looks from
//! inflating false keeps.
//!
//! Without a noise model (replay, hand-built evidence) it falls back to
//! Welch's t-test with adaptive sampling: at each look it tests "the
//! candidate improves on the incumbent by more than `min_delta`"
//! one-sided, spending `alpha` evenly over the most looks the budget allows
//! (Bonferroni); a poor observed improvement (one-sided p-value above
//! `futility`) is discarded early.
//!
//! Either way: every cap is the spec's. `max_n` counts failed samples
//! too (the candidate's all, the incumbent's from the candidate's first
//! sample on); an incumbent without a usable sample (a failed or NaN
//! baseline, samples aged out by `max_age`) is measured again within that
//! budget rather than discarding every candidate; the incumbent's samples
//! taken while it was itself a candidate are left out (they selected it,
//! so they flatter it: the winner's curse), so a new incumbent is measured
//! afresh.

use crate::spec::{CompareSpec, StatSpec};
use crate::summary;
use async_trait::async_trait;
use autoresearch_core::compare::{Comparator, CompareError, Decision, Evidence, Verdict};
use autoresearch_core::noise::MetricNoise;
use serde_json::{Value, json};
use statrs::distribution::{ContinuousCDF, StudentsT};

/// See the module docs. Deterministic in its evidence.
#[derive(Clone, Debug)]
pub struct Stat {
    spec: StatSpec,
}

/// The result of Welch's test on two summaries.
struct Welch {
    improvement: f64,
    se: f64,
    df: f64,
    t: f64,
    p: f64,
}

fn welch(
    spec: &StatSpec,
    inc: &crate::Summary,
    cand: &crate::Summary,
) -> Result<Welch, CompareError> {
    let improvement = spec.direction.improvement(inc.mean, cand.mean);
    let (vi, vc) = (
        inc.sd.powi(2) / inc.n as f64,
        cand.sd.powi(2) / cand.n as f64,
    );
    let se = (vi + vc).sqrt();
    let excess = improvement - spec.min_delta;
    if se == 0.0 {
        // Noise-free measurements: the sign decides.
        let p = if excess > 0.0 { 0.0 } else { 1.0 };
        return Ok(Welch {
            improvement,
            se,
            df: f64::INFINITY,
            t: if excess > 0.0 {
                f64::INFINITY
            } else {
                f64::NEG_INFINITY
            },
            p,
        });
    }
    let df = (vi + vc).powi(2)
        / (vi.powi(2) / (inc.n as f64 - 1.0) + vc.powi(2) / (cand.n as f64 - 1.0));
    let t = excess / se;
    let dist = student(df)?;
    Ok(Welch {
        improvement,
        se,
        df,
        t,
        p: 1.0 - dist.cdf(t),
    })
}

fn student(df: f64) -> Result<StudentsT, CompareError> {
    StudentsT::new(0.0, 1.0, df).map_err(|e| CompareError {
        comparator: "stat".into(),
        reason: format!("Student's t with {df} degrees of freedom: {e}"),
    })
}

impl Stat {
    /// A sequential comparator for `spec`, taken as given (a spec built
    /// by hand may skip [`CompareSpec::validate`]).
    pub fn new(spec: StatSpec) -> Self {
        Stat { spec }
    }

    /// The most looks Welch's budget allows: the first at `min_samples` per
    /// side, then one per `batch` until `max_samples`.
    pub fn max_looks(&self) -> u32 {
        let s = &self.spec;
        // Saturating: a spec built by hand may skip `CompareSpec::validate`.
        1 + s
            .max_samples
            .saturating_sub(s.min_samples)
            .div_ceil(s.batch.max(1))
    }

    /// The one-sided level each Welch look is tested at.
    pub fn alpha_per_look(&self) -> f64 {
        self.spec.alpha / f64::from(self.max_looks())
    }

    /// The posterior probability that the true improvement exceeds
    /// `above`, given an observed mean `improvement` whose sampling
    /// variance is `var`, under the prior N(0, (`effect`·σ)²) on the true
    /// improvement (normal-normal conjugate update: posterior mean
    /// `τ²/(τ²+v)·d`, variance `τ²v/(τ²+v)`).
    pub fn posterior_gain(&self, improvement: f64, var: f64, sigma: f64, above: f64) -> f64 {
        let tau2 = (self.spec.effect * sigma).powi(2);
        let mean = tau2 / (tau2 + var) * improvement;
        let sd = (tau2 * var / (tau2 + var)).sqrt();
        let z = (mean - above) / sd;
        statrs::function::erf::erfc(-z / std::f64::consts::SQRT_2) / 2.0
    }

    /// The incumbent's usable samples: measured as the incumbent (not while
    /// it was a candidate), none older than `max_age_secs` before the
    /// candidate's first sample, at most `max_samples`, the most recent.
    fn incumbent_samples(&self, incumbent: &Evidence, first: Option<i64>) -> Vec<f64> {
        let mut inc = incumbent.timed_samples(&self.spec.metric, true);
        if let (Some(max_age), Some(first)) = (self.spec.max_age_secs, first) {
            let oldest = first.saturating_sub((max_age as i64).saturating_mul(1000));
            inc.retain(|(t, _)| *t >= oldest);
        }
        let keep = self.spec.max_samples as usize;
        let skip = inc.len().saturating_sub(keep);
        inc.into_iter().skip(skip).map(|(_, v)| v).collect()
    }

    /// The decision, computed synchronously (no I/O).
    pub fn decide(
        &self,
        incumbent: &Evidence,
        candidate: &Evidence,
    ) -> Result<Decision, CompareError> {
        let s = &self.spec;
        let first = candidate.results.iter().map(|r| r.evaluated_at_ms).min();
        let inc_samples = self.incumbent_samples(incumbent, first);
        let mut cand_samples = candidate.samples(&s.metric);
        cand_samples.truncate(s.max_samples as usize);
        // Every sample taken counts against the budget, failed ones too.
        let spent = Spent {
            incumbent: first.map_or(0, |t| {
                incumbent
                    .results
                    .iter()
                    .filter(|r| r.evaluated_at_ms >= t)
                    .count() as u32
            }),
            candidate: candidate.results.len() as u32,
            max: s.max_samples,
        };
        let (ni, nc) = (inc_samples.len() as u32, cand_samples.len() as u32);
        let noise = candidate
            .noise
            .as_ref()
            .or(incumbent.noise.as_ref())
            .map(|m| m.metric(&s.metric).cloned());
        let d = json!({
            "comparator": CompareSpec::Stat(s.clone()).to_string(),
            "metric": s.metric,
            "direction": s.direction.long(),
            "alpha": s.alpha,
            "n": {"incumbent": ni, "candidate": nc},
            "spent": {"incumbent": spent.incumbent, "candidate": spent.candidate},
            "max_samples": s.max_samples,
        });
        if !candidate.results.is_empty() && nc == 0 {
            return Ok(Decision::new(
                Verdict::Discard,
                format!(
                    "candidate has {} results but no {}",
                    candidate.results.len(),
                    s.metric
                ),
                d,
            ));
        }
        if ni == 0 && !incumbent.results.is_empty() {
            // Failed, NaN or aged-out samples are no evidence: measure the
            // incumbent again, within the budget.
            let why = format!(
                "incumbent has {} results but no usable {} (failed, aged out by max_age, or taken while it was a candidate)",
                incumbent.results.len(),
                s.metric
            );
            let want = if noise.is_some() { 1 } else { s.min_samples };
            return Ok(match spent.more_incumbent(want) {
                0 => Decision::new(
                    Verdict::Discard,
                    format!("{why}; {} re-measurements spent (max_n)", spent.incumbent),
                    d,
                ),
                n => Decision::new(
                    Verdict::NeedMore {
                        incumbent: n,
                        candidate: 0,
                    },
                    format!("{why}: measuring it again"),
                    d,
                ),
            });
        }
        match noise {
            Some(noise) => self.sequential(d, noise, &inc_samples, &cand_samples, spent),
            None => self.welch_look(d, &inc_samples, &cand_samples, spent),
        }
    }

    /// The posterior rule on the noise model; `noise` is `None` while the experiment
    /// has repeated nothing (then the incumbent is measured again, which
    /// gives the model its first pair).
    fn sequential(
        &self,
        mut d: Value,
        noise: Option<MetricNoise>,
        inc: &[f64],
        cand: &[f64],
        spent: Spent,
    ) -> Result<Decision, CompareError> {
        let s = &self.spec;
        let (ni, nc) = (inc.len() as u32, cand.len() as u32);
        if ni == 0 || nc == 0 {
            return Ok(self.first_samples(d, ni, nc, spent));
        }
        let (Some(i), Some(c)) = (summary(inc), summary(cand)) else {
            return Ok(self.first_samples(d, ni, nc, spent));
        };
        let improvement = s.direction.improvement(i.mean, c.mean);
        d["mean"] = json!({"incumbent": i.mean, "candidate": c.mean});
        d["improvement"] = json!(improvement);
        d["min_delta"] = json!(s.min_delta);
        let stats = format!(
            "{} mean {} vs {} (n {nc} vs {ni}), improvement {}",
            s.metric,
            crate::num(c.mean),
            crate::num(i.mean),
            crate::num(improvement)
        );
        let noise = match noise {
            Some(n) if n.sigma == 0.0 || n.df >= MIN_NOISE_DF || spent.more_incumbent(1) == 0 => n,
            known => {
                let have = known.as_ref().map_or(0, |n| n.df);
                d["noise"] = json!({"df": have});
                // Several at once only once the evaluator is known to be
                // noisy: a deterministic one is decided on its first repeat.
                let noisy = known.is_some_and(|n| n.sigma > 0.0);
                let want = if noisy {
                    MIN_NOISE_DF
                        .saturating_sub(have)
                        .clamp(1, s.parallel.max(1))
                } else {
                    1
                };
                return Ok(Decision::new(
                    Verdict::NeedMore {
                        incumbent: spent.more_incumbent(want),
                        candidate: 0,
                    },
                    format!(
                        "the noise of {} is not known yet ({have} repeats, {MIN_NOISE_DF} wanted): measuring the incumbent again; {stats}",
                        s.metric
                    ),
                    d,
                ));
            }
        };
        d["noise"] = json!({"sigma": noise.sigma, "df": noise.df, "method": noise.method});
        let excess = improvement - s.min_delta;
        if noise.sigma == 0.0 {
            let (verdict, why) = if excess > 0.0 {
                (Verdict::Keep, "better")
            } else {
                (Verdict::Discard, "not better")
            };
            return Ok(Decision::new(
                verdict,
                format!("{why} on a deterministic evaluator (identical repeats, σ = 0): {stats}"),
                d,
            ));
        }
        // The estimate's own uncertainty: a t variable's variance df/(df-2)
        // widens σ while few repeats back it.
        let df = f64::from(noise.df.max(MIN_NOISE_DF));
        let sigma = noise.sigma * (df / (df - 2.0)).sqrt();
        let var = sigma.powi(2) * (1.0 / f64::from(ni) + 1.0 / f64::from(nc));
        let p = self.posterior_gain(improvement, var, noise.sigma, s.min_delta);
        let worth = s.min_delta.max(s.worth * noise.sigma);
        let p_worth = self.posterior_gain(improvement, var, noise.sigma, worth);
        d["posterior"] = json!({
            "p_gain": p,
            "p_worth": p_worth,
            "worth": worth,
            "keep_at": 1.0 - s.alpha,
            "discard_at": s.beta,
            "prior_sd": s.effect * noise.sigma,
            "sigma_used": sigma,
        });
        let stats = format!(
            "{stats}, σ {} (df {}), P(gain > {}) = {}",
            crate::num(noise.sigma),
            noise.df,
            crate::num(s.min_delta),
            crate::num(p)
        );
        if p >= 1.0 - s.alpha {
            return Ok(Decision::new(
                Verdict::Keep,
                format!("improvement beyond the noise: {stats}"),
                d,
            ));
        }
        if p_worth <= s.beta {
            return Ok(Decision::new(
                Verdict::Discard,
                format!("no sign of improvement: {stats}"),
                d,
            ));
        }
        // A close call: more samples of the side that tells most.
        let decided = |ni: u32, nc: u32| {
            let var = sigma.powi(2) * (1.0 / f64::from(ni) + 1.0 / f64::from(nc));
            self.posterior_gain(improvement, var, noise.sigma, s.min_delta) >= 1.0 - s.alpha
                || self.posterior_gain(improvement, var, noise.sigma, worth) <= s.beta
        };
        let (mi, mc) = self.planned(ni, nc, spent, decided);
        if mi + mc == 0 {
            return Ok(Decision::new(
                Verdict::Discard,
                format!(
                    "undecided within the budget of {} samples a side: {stats}",
                    s.max_samples
                ),
                d,
            ));
        };
        Ok(Decision::new(
            Verdict::NeedMore {
                incumbent: mi,
                candidate: mc,
            },
            format!(
                "a close call, sampling the {}: {stats}",
                match (mi, mc) {
                    (0, 1) => "candidate".to_string(),
                    (1, 0) => "incumbent".to_string(),
                    (i, c) => format!("incumbent {i} and the candidate {c} times at once"),
                }
            ),
            d,
        ))
    }

    /// The samples, (incumbent, candidate), the posterior rule's next
    /// looks would ask for one at a time (the incumbent while it has no
    /// more samples than the candidate, the candidate otherwise, within
    /// `max_n`) up to and including the first look at which `decided`
    /// (given the sample counts, the means as they are) says it would
    /// stop: at most `parallel` in all. `(0, 0)`: the budget is spent.
    fn planned(
        &self,
        ni: u32,
        nc: u32,
        spent: Spent,
        decided: impl Fn(u32, u32) -> bool,
    ) -> (u32, u32) {
        let s = &self.spec;
        let (mut mi, mut mc) = (0u32, 0u32);
        while mi + mc < s.parallel.max(1) {
            let (i, c) = (ni + mi, nc + mc);
            if i <= c && i < s.max_samples && spent.more_incumbent(mi + 1) > mi {
                mi += 1;
            } else if spent.more_candidate(mc + 1) > mc {
                mc += 1;
            } else {
                break;
            }
            if decided(ni + mi, nc + mc) {
                break;
            }
        }
        (mi, mc)
    }

    /// Before the first look: one sample of each side.
    fn first_samples(&self, d: Value, ni: u32, nc: u32, spent: Spent) -> Decision {
        let (mi, mc) = (
            spent.more_incumbent(u32::from(ni == 0)),
            spent.more_candidate(u32::from(nc == 0)),
        );
        if mi + mc == 0 {
            return Decision::new(
                Verdict::Discard,
                format!(
                    "{} samples: incumbent {ni}, candidate {nc}, and the budget of {} is spent",
                    self.spec.metric, self.spec.max_samples
                ),
                d,
            );
        }
        Decision::new(
            Verdict::NeedMore {
                incumbent: mi,
                candidate: mc,
            },
            format!(
                "{} samples so far: incumbent {ni}, candidate {nc}; the first test needs 1 each",
                self.spec.metric
            ),
            d,
        )
    }

    /// One look of Welch's test (no noise model).
    fn welch_look(
        &self,
        mut d: Value,
        inc_samples: &[f64],
        cand_samples: &[f64],
        spent: Spent,
    ) -> Result<Decision, CompareError> {
        let s = &self.spec;
        let (ni, nc) = (inc_samples.len() as u32, cand_samples.len() as u32);
        d["alpha_per_look"] = json!(self.alpha_per_look());
        let (inc, cand) = match (summary(inc_samples), summary(cand_samples)) {
            (Some(i), Some(c)) if ni >= s.min_samples && nc >= s.min_samples => (i, c),
            (i, c) => {
                d["mean"] = json!({"incumbent": i.map(|x| x.mean), "candidate": c.map(|x| x.mean)});
                let more = (
                    spent.more_incumbent(s.min_samples.saturating_sub(ni)),
                    spent.more_candidate(s.min_samples.saturating_sub(nc)),
                );
                if more == (0, 0) {
                    return Ok(Decision::new(
                        Verdict::Discard,
                        format!(
                            "{} samples: incumbent {ni}, candidate {nc}, below min_n={} with the budget of {} spent",
                            s.metric, s.min_samples, s.max_samples
                        ),
                        d,
                    ));
                }
                return Ok(Decision::new(
                    Verdict::NeedMore {
                        incumbent: more.0,
                        candidate: more.1,
                    },
                    format!(
                        "{} samples so far: incumbent {ni}, candidate {nc}; the first test needs {} each",
                        s.metric, s.min_samples
                    ),
                    d,
                ));
            }
        };
        let w = welch(s, &inc, &cand)?;
        d["mean"] = json!({"incumbent": inc.mean, "candidate": cand.mean});
        d["sd"] = json!({"incumbent": inc.sd, "candidate": cand.sd});
        d["improvement"] = json!(w.improvement);
        d["min_delta"] = json!(s.min_delta);
        d["t"] = finite_or_null(w.t);
        d["df"] = finite_or_null(w.df);
        d["p_value"] = json!(w.p);
        let ci_half = if w.se == 0.0 {
            0.0
        } else {
            student(w.df)?.inverse_cdf(1.0 - s.alpha / 2.0) * w.se
        };
        d["ci"] = json!({
            "level": 1.0 - s.alpha,
            "low": w.improvement - ci_half,
            "high": w.improvement + ci_half,
        });
        let stats = format!(
            "{} mean {} vs {} (n {nc} vs {ni}), improvement {}, p={}",
            s.metric,
            crate::num(cand.mean),
            crate::num(inc.mean),
            crate::num(w.improvement),
            crate::num(w.p)
        );
        if w.p < self.alpha_per_look() {
            return Ok(Decision::new(
                Verdict::Keep,
                format!(
                    "significant improvement: {stats} < {}",
                    crate::num(self.alpha_per_look())
                ),
                d,
            ));
        }
        if w.p > s.futility {
            return Ok(Decision::new(
                Verdict::Discard,
                format!("no sign of improvement: {stats} > futility {}", s.futility),
                d,
            ));
        }
        let target = (nc + s.batch.max(1)).min(s.max_samples);
        let more_inc = spent.more_incumbent(target.saturating_sub(ni));
        let more_cand = spent.more_candidate(target.saturating_sub(nc));
        if more_inc == 0 && more_cand == 0 {
            return Ok(Decision::new(
                Verdict::Discard,
                format!(
                    "not significant within the budget of {} samples: {stats}",
                    s.max_samples
                ),
                d,
            ));
        }
        Ok(Decision::new(
            Verdict::NeedMore {
                incumbent: more_inc,
                candidate: more_cand,
            },
            format!("undecided, sampling to {target} per side: {stats}"),
            d,
        ))
    }
}

/// Repeats of the experiment wanted before σ is trusted: the rule widens σ
/// by `sqrt(df/(df-2))`, finite from 3 on.
const MIN_NOISE_DF: u32 = 3;

/// Samples taken so far against the `max_n` budget, failed ones included.
#[derive(Clone, Copy)]
struct Spent {
    /// The incumbent's, since the candidate's first sample.
    incumbent: u32,
    /// The candidate's.
    candidate: u32,
    max: u32,
}

impl Spent {
    /// Up to `want` more incumbent samples, within the budget.
    fn more_incumbent(&self, want: u32) -> u32 {
        want.min(self.max.saturating_sub(self.incumbent))
    }

    /// Up to `want` more candidate samples, within the budget.
    fn more_candidate(&self, want: u32) -> u32 {
        want.min(self.max.saturating_sub(self.candidate))
    }
}

fn finite_or_null(x: f64) -> Value {
    if x.is_finite() { json!(x) } else { Value::Null }
}

#[async_trait]
impl Comparator for Stat {
    fn spec(&self) -> String {
        CompareSpec::Stat(self.spec.clone()).to_string()
    }

    async fn compare(
        &self,
        incumbent: &Evidence,
        candidate: &Evidence,
    ) -> Result<Decision, CompareError> {
        self.decide(incumbent, candidate)
    }
}
