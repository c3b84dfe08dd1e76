//! The noise-aware comparator: Welch's t-test with adaptive sampling.
//!
//! At each look it tests "the candidate improves on the incumbent by more
//! than `min_delta`" one-sided. The overall false-keep rate `alpha` is spent
//! evenly over the most looks the budget allows (Bonferroni), so that asking
//! for more samples again and again does not inflate it. A candidate whose
//! observed improvement is poor (one-sided p-value above `futility`) is
//! discarded early; one still undecided at the sample budget is discarded.

use crate::spec::{CompareSpec, StatSpec};
use crate::summary;
use async_trait::async_trait;
use autoresearch_core::compare::{Comparator, CompareError, Decision, Evidence, Verdict};
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
    /// A sequential t-test comparator for `spec`, taken as given (a spec built
    /// by hand may skip [`CompareSpec::validate`]).
    pub fn new(spec: StatSpec) -> Self {
        Stat { spec }
    }

    /// The most looks the budget allows: the first at `min_samples` per
    /// side, then one per `batch` until `max_samples`.
    pub fn max_looks(&self) -> u32 {
        let s = &self.spec;
        // Saturating: a spec built by hand may skip `CompareSpec::validate`.
        1 + s
            .max_samples
            .saturating_sub(s.min_samples)
            .div_ceil(s.batch.max(1))
    }

    /// The one-sided level each look is tested at.
    pub fn alpha_per_look(&self) -> f64 {
        self.spec.alpha / f64::from(self.max_looks())
    }

    /// The incumbent's usable samples: at most `max_samples`, the most recent
    /// ones, and none older than `max_age_secs` before the candidate's first
    /// sample.
    fn incumbent_samples(&self, incumbent: &Evidence, candidate: &Evidence) -> Vec<f64> {
        let metric = &self.spec.metric;
        let timed = |e: &Evidence| -> Vec<(i64, f64)> {
            e.results
                .iter()
                .filter_map(|r| {
                    let v = r.outputs().ok()?.get(metric)?.as_f64()?;
                    v.is_finite().then_some((r.evaluated_at_ms, v))
                })
                .collect()
        };
        let mut inc = timed(incumbent);
        let first = timed(candidate).iter().map(|(t, _)| *t).min();
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
        let inc_samples = self.incumbent_samples(incumbent, candidate);
        let mut cand_samples = candidate.samples(&s.metric);
        cand_samples.truncate(s.max_samples as usize);
        let (ni, nc) = (inc_samples.len() as u32, cand_samples.len() as u32);
        let mut d = json!({
            "comparator": CompareSpec::Stat(s.clone()).to_string(),
            "metric": s.metric,
            "direction": s.direction.long(),
            "alpha": s.alpha,
            "alpha_per_look": self.alpha_per_look(),
            "n": {"incumbent": ni, "candidate": nc},
            "max_samples": s.max_samples,
        });
        for (side, e) in [("incumbent", incumbent), ("candidate", candidate)] {
            if !e.results.is_empty() && e.samples(&s.metric).is_empty() {
                return Ok(Decision::new(
                    Verdict::Discard,
                    format!("{side} has {} results but no {}", e.results.len(), s.metric),
                    d,
                ));
            }
        }
        let (inc, cand) = match (summary(&inc_samples), summary(&cand_samples)) {
            (Some(i), Some(c)) if ni >= s.min_samples && nc >= s.min_samples => (i, c),
            (i, c) => {
                d["mean"] = json!({"incumbent": i.map(|x| x.mean), "candidate": c.map(|x| x.mean)});
                let more = (
                    s.min_samples.saturating_sub(ni),
                    s.min_samples.saturating_sub(nc),
                );
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
        let more_inc = target.saturating_sub(ni);
        let more_cand = target.saturating_sub(nc);
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
