//! The noise line of `autoresearch status`: the experiment's stored noise
//! model (core's `NoiseModel`, recorded by the loop), one metric a clause.

use autoresearch_core::World;
use autoresearch_core::noise::NoiseModel;

/// `val σ 0.0031 (pooled-mad, df 12 from 5 commits)`, or `None`
/// when the loop has recorded no noise model for `experiment` yet.
pub fn noise_line(w: &World, experiment: &str) -> Option<String> {
    let (entity, _) = w.experiment(experiment)?;
    noise_text(w.get::<NoiseModel>(entity).as_ref())
}

/// [`noise_line`] of the model read (none: `None`).
pub fn noise_text(model: Option<&NoiseModel>) -> Option<String> {
    let model = model?;
    let clauses: Vec<String> = model
        .metrics
        .iter()
        .filter(|m| m.is_known())
        .map(|m| {
            format!(
                "{} σ {} ({}, df {} from {} commits)",
                m.metric,
                short_number(m.sigma),
                m.method,
                m.df,
                m.groups
            )
        })
        .collect();
    (!clauses.is_empty()).then(|| clauses.join("; "))
}

fn short_number(x: f64) -> String {
    if x == 0.0 {
        "0 (identical repeats)".into()
    } else {
        format!("{x:.4e}")
            .parse::<f64>()
            .map_or_else(|_| x.to_string(), |v| format!("{v}"))
    }
}
