//! The noise model of an experiment: how much one evaluation of the same
//! commit varies from the next, per metric, estimated from every repeated
//! sample the experiment holds.
//!
//! The estimate pools the within-commit residuals of every commit measured
//! more than once (across runs and heads) and takes their median absolute
//! value, scaled to a normal standard deviation: the pooled MAD (median
//! absolute deviation; Hampel 1974, "The influence curve and its role in
//! robust estimation", JASA 69; consistency constant 1.4826 = 1/Φ⁻¹(3/4) as
//! in Rousseeuw & Croux 1993, "Alternatives to the median absolute
//! deviation", JASA 88). A few wild samples (a crashed run printing 99,
//! a loaded machine) move it little, unlike a pooled variance.
//!
//! Each residual is taken from its commit's mean and scaled by
//! `sqrt(n / (n - 1))`, so that it has the noise's variance whatever the
//! group size (a pair's residuals are `±(a - b) / 2`, whose scale is `σ/√2`).
//! When more than half the residuals are exactly zero (a quantized
//! evaluator) while some are not, the MAD says 0 although the evaluator is
//! noisy: the pooled standard deviation is used instead. Every residual
//! zero means a deterministic evaluator: σ = 0.
//!
//! The model is stored as component `NoiseModel` on the experiment's entity
//! whenever the loop sees it change, and handed to comparators in
//! [`Evidence::noise`](crate::compare::Evidence::noise).

use crate::components::EvalResult;
use crate::world::World;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// The normal-consistency constant of the MAD: `1 / Φ⁻¹(3/4)`.
pub const MAD_TO_SIGMA: f64 = 1.482_602_218_505_602;

/// The noise of one metric.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricNoise {
    /// The metric, a key of the Results' outputs.
    pub metric: String,
    /// The estimated standard deviation of one evaluation, in the metric's
    /// unit; 0 when every repeat was identical.
    pub sigma: f64,
    /// Degrees of freedom of the estimate: Σ (n_i − 1) over the commits
    /// measured n_i ≥ 2 times. 0: nothing repeated yet, `sigma` unknown.
    pub df: u32,
    /// How many commits were measured more than once.
    pub groups: u32,
    /// How many samples those commits have in all.
    pub samples: u32,
    /// How `sigma` was computed: `pooled-mad`, `pooled-sd` (the MAD was 0
    /// but not every residual), `none` (nothing repeated).
    pub method: String,
}

impl MetricNoise {
    /// Whether anything was repeated, so that `sigma` means something.
    pub fn is_known(&self) -> bool {
        self.df > 0
    }
}

/// The noise model of one experiment: one [`MetricNoise`] per metric seen
/// in a repeated sample. Stored as component `NoiseModel`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NoiseModel {
    /// The experiment it describes.
    pub experiment_name: String,
    /// Per metric, sorted by name.
    pub metrics: Vec<MetricNoise>,
    /// When it was computed, in Unix milliseconds.
    pub updated_at_ms: i64,
}

impl NoiseModel {
    /// The noise of `metric`, when it was ever repeated.
    pub fn metric(&self, metric: &str) -> Option<&MetricNoise> {
        self.metrics
            .iter()
            .find(|m| m.metric == metric && m.is_known())
    }

    /// The model of `experiment` from groups of repeated samples: for each
    /// metric, the values of each commit measured (one inner vector per
    /// commit). Groups of fewer than two values add nothing.
    pub fn from_groups(
        experiment: &str,
        groups: &BTreeMap<String, Vec<Vec<f64>>>,
        at_ms: i64,
    ) -> NoiseModel {
        NoiseModel {
            experiment_name: experiment.to_string(),
            metrics: groups.iter().filter_map(|(m, g)| estimate(m, g)).collect(),
            updated_at_ms: at_ms,
        }
    }

    /// Whether two models estimate the same (ignoring when they were computed).
    pub fn same_estimate(&self, other: &NoiseModel) -> bool {
        self.experiment_name == other.experiment_name && self.metrics == other.metrics
    }
}

/// The noise of `metric` from `groups` (one vector of samples per commit),
/// or `None` when no group has two finite samples. See the module docs for
/// the method.
pub fn estimate(metric: &str, groups: &[Vec<f64>]) -> Option<MetricNoise> {
    let mut residuals = Vec::new();
    let (mut df, mut n_groups, mut samples) = (0u32, 0u32, 0u32);
    for g in groups {
        let xs: Vec<f64> = g.iter().copied().filter(|x| x.is_finite()).collect();
        if xs.len() < 2 {
            continue;
        }
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let scale = (n / (n - 1.0)).sqrt();
        residuals.extend(xs.iter().map(|x| ((x - mean) * scale).abs()));
        df += xs.len() as u32 - 1;
        n_groups += 1;
        samples += xs.len() as u32;
    }
    if residuals.is_empty() {
        return None;
    }
    // Exact repeats leave float dust after the mean: a residual this small
    // next to the values is a zero.
    let magnitude = groups
        .iter()
        .flatten()
        .filter(|x| x.is_finite())
        .fold(0.0f64, |m, x| m.max(x.abs()));
    let dust = magnitude * 1e-12;
    for r in &mut residuals {
        if *r <= dust {
            *r = 0.0;
        }
    }
    let mad = median(&mut residuals.clone());
    let (sigma, method) = if mad > 0.0 {
        (MAD_TO_SIGMA * mad, "pooled-mad")
    } else if residuals.iter().all(|r| *r == 0.0) {
        (0.0, "pooled-mad")
    } else {
        // Each scaled residual has the noise's variance: their mean square
        // estimates σ².
        let ss: f64 = residuals.iter().map(|r| r * r).sum();
        ((ss / f64::from(samples)).sqrt(), "pooled-sd")
    };
    Some(MetricNoise {
        metric: metric.to_string(),
        sigma,
        df,
        groups: n_groups,
        samples,
        method: method.to_string(),
    })
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// The noise model of `experiment` in `world`: every Result of its runs,
/// grouped by (run, measured commit), per numeric metric (keys starting
/// with `_` are not metrics). Cost: one pass over the world's Runs and
/// Results.
pub fn experiment_noise(world: &World, experiment: &str, at_ms: i64) -> NoiseModel {
    let runs: std::collections::HashMap<String, String> = world
        .find_all::<crate::components::Run>(|r| r.experiment_name == experiment)
        .into_iter()
        .map(|(_, r)| (r.run_id.clone(), r.commit_hash))
        .collect();
    let mut by_commit: BTreeMap<(String, String), Vec<EvalResult>> = BTreeMap::new();
    for (_, r) in world.find_all::<EvalResult>(|r| runs.contains_key(&r.run_id)) {
        let commit = r
            .measured_commit()
            .unwrap_or_else(|| runs.get(&r.run_id).cloned().unwrap_or_default());
        by_commit
            .entry((r.run_id.clone(), commit))
            .or_default()
            .push(r);
    }
    let mut groups: BTreeMap<String, Vec<Vec<f64>>> = BTreeMap::new();
    for results in by_commit.values().filter(|rs| rs.len() > 1) {
        let mut per_metric: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for r in results {
            let Ok(Value::Object(o)) = r.outputs() else {
                continue;
            };
            for (k, v) in o {
                if let Some(x) = v.as_f64().filter(|x| x.is_finite())
                    && !k.starts_with('_')
                {
                    per_metric.entry(k).or_default().push(x);
                }
            }
        }
        for (k, xs) in per_metric {
            groups.entry(k).or_default().push(xs);
        }
    }
    NoiseModel::from_groups(experiment, &groups, at_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_give_the_noise_sd_not_half_of_it() {
        // Pairs two apart: residuals ±1 from the mean, scaled by √2. A
        // pair's difference has sd σ√2 and median |difference| 0.6745·σ√2,
        // so σ = 2 / (0.6745·√2) = 1.4826·√2.
        let g = vec![vec![0.0, 2.0], vec![5.0, 7.0], vec![1.0, 3.0]];
        let m = estimate("x", &g).unwrap();
        assert!(
            (m.sigma - MAD_TO_SIGMA * 2f64.sqrt()).abs() < 1e-12,
            "{m:?}"
        );
        assert_eq!((m.df, m.groups, m.samples), (3, 3, 6));
    }

    #[test]
    fn an_outlier_moves_it_little() {
        let mut g: Vec<Vec<f64>> = (0..20)
            .map(|i| vec![f64::from(i), f64::from(i) + 1.0])
            .collect();
        let clean = estimate("x", &g).unwrap().sigma;
        g.push(vec![0.0, 1000.0]);
        let dirty = estimate("x", &g).unwrap().sigma;
        assert!(dirty < clean * 1.2, "{clean} -> {dirty}");
    }

    #[test]
    fn identical_repeats_mean_no_noise_and_singletons_mean_unknown() {
        let m = estimate("x", &[vec![0.3, 0.3, 0.3], vec![0.1, 0.1]]).unwrap();
        assert_eq!(m.sigma, 0.0);
        assert_eq!(m.df, 3);
        assert!(estimate("x", &[vec![1.0], vec![2.0, f64::NAN]]).is_none());
    }

    #[test]
    fn a_quantized_evaluator_falls_back_to_the_pooled_sd() {
        let g: Vec<Vec<f64>> = (0..10)
            .map(|i| {
                if i < 7 {
                    vec![1.0, 1.0]
                } else {
                    vec![1.0, 2.0]
                }
            })
            .collect();
        let m = estimate("x", &g).unwrap();
        assert_eq!(m.method, "pooled-sd");
        assert!(m.sigma > 0.0);
    }
}
