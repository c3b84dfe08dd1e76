//! autoresearch-compare: the built-in comparators of autoresearch, and
//! counterfactual replay of an experiment under another comparator.
//!
//! Every comparator implements core's [`Comparator`] trait; this crate adds
//! none of its own interfaces. Build one from a spec string with
//! [`from_spec`] (`scalar:val_bpb:min`, `stat:val_bpb:min:alpha=0.05`,
//! `pareto:val_bpb:min,memory_gb:min`, `judge:CMD`, `tournament:SPEC`,
//! `vote:quorum=2`, `all:metric(tests_passed)==1;stat:val_bpb:min`) or from
//! the `[compare]` table of `autoresearch.toml` with [`from_config`]; the
//! grammar is in [`spec`] and in `docs/comparators.md`.
//!
//! Depends on `autoresearch-core` only. The judge runs a child process
//! (bounded by a timeout, its process group killed); every other comparator
//! is pure computation on the evidence.

pub mod gate;
pub mod judge;
pub mod pareto;
pub mod replay;
pub mod replayer;
pub mod scalar;
pub mod spec;
pub mod stat;
pub mod tournament;
pub mod vote;

pub use gate::AllOf;
pub use judge::Judge;
pub use pareto::Pareto;
pub use replay::{ReplayError, ReplayReport, ReplayRequest, replay};
pub use replayer::LedgerReplayer;
pub use scalar::Scalar;
pub use spec::{CompareSpec, Direction, SpecError};
pub use stat::Stat;
pub use tournament::Tournament;
pub use vote::HumanVote;

use autoresearch_core::compare::Comparator;
use std::sync::Arc;

/// Builds the comparator a spec string describes, e.g. `scalar:val_bpb:min`
/// or `stat:val_bpb:min:alpha=0.05`. Errors quote the spec and say what is
/// wrong with it. Cost: parsing only; a judge starts no process until asked
/// to compare.
pub fn from_spec(spec: &str) -> Result<Arc<dyn Comparator>, SpecError> {
    Ok(build(&CompareSpec::parse(spec)?))
}

/// Builds the comparator the `[compare]` table of `autoresearch.toml`
/// describes (`kind = "scalar"`, `metric`, `direction`, `min_delta`, ...; or
/// a single `spec = "..."`). Errors name the key, as `compare.direction`.
pub fn from_config(compare: &toml::Value) -> Result<Arc<dyn Comparator>, SpecError> {
    Ok(build(&CompareSpec::from_toml(compare)?))
}

/// Builds the comparator for an already parsed spec.
pub fn build(spec: &CompareSpec) -> Arc<dyn Comparator> {
    match spec {
        CompareSpec::Scalar(s) => Arc::new(Scalar::new(s.clone())),
        CompareSpec::Stat(s) => Arc::new(Stat::new(s.clone())),
        CompareSpec::Pareto(objs) => Arc::new(Pareto::new(objs.clone())),
        CompareSpec::Judge(j) => Arc::new(Judge::new(j.clone())),
        CompareSpec::Tournament(inner) => Arc::new(Tournament::new(build(inner))),
        CompareSpec::Vote { quorum } => Arc::new(HumanVote::new(*quorum)),
        CompareSpec::All(members) => Arc::new(AllOf::new(members)),
    }
}

/// Count, mean and sample standard deviation of one side's samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Summary {
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation (n - 1 denominator); 0 for one sample.
    pub sd: f64,
}

/// The summary of `xs`, or `None` when there are no samples.
pub(crate) fn summary(xs: &[f64]) -> Option<Summary> {
    if xs.is_empty() {
        return None;
    }
    let n = xs.len();
    let mean = xs.iter().sum::<f64>() / n as f64;
    let sd = if n > 1 {
        let ss: f64 = xs.iter().map(|x| (x - mean).powi(2)).sum();
        (ss / (n - 1) as f64).sqrt()
    } else {
        0.0
    };
    Some(Summary { n, mean, sd })
}

/// A number for a reason line: at most 6 significant digits, without the
/// float noise of a subtraction (`0.0047`, not `0.0047000000000000375`).
/// Descriptors keep the exact values.
pub(crate) fn num(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let magnitude = x.abs().log10().floor() as i32;
    if !(-5..=15).contains(&magnitude) {
        return format!("{x:.5e}");
    }
    let decimals = (5 - magnitude).max(0) as usize;
    let text = format!("{x:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_in_reasons_are_short() {
        for (x, want) in [
            (0.0047000000000000375, "0.0047"),
            (-0.011799999999999922, "-0.0118"),
            (1.0, "1"),
            (0.9979, "0.9979"),
            (123456.7, "123457"),
            (0.00039999999999995595, "0.0004"),
            (1e-7, "1.00000e-7"),
            (0.0, "0"),
        ] {
            assert_eq!(super::num(x), want, "{x}");
        }
    }
}
