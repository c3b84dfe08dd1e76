//! Reading an evaluator's metrics: the configured [`MetricsFormat`] as the
//! reader's [`MetricSpec`]; the reader itself is core's
//! [`autoresearch_core::metrics`], shared with every executor.

use crate::config::MetricsFormat;
pub use autoresearch_core::metrics::{
    MetricReader, MetricReading, MetricSpec, MetricSyntax, MetricsError, NearMiss, UNITS, read_text,
};
use serde_json::{Map, Value};

impl MetricsFormat {
    /// What the reader is asked to read, with the metrics that must be there.
    pub fn spec(&self, required: &[String]) -> MetricSpec {
        MetricSpec {
            syntax: match self {
                MetricsFormat::Lines => MetricSyntax::Lines,
                MetricsFormat::Json => MetricSyntax::Json,
                MetricsFormat::File(_) => MetricSyntax::JsonFile,
            },
            required: required.to_vec(),
        }
    }
}

/// Reads `text` (a whole output) in `format` and checks it: at least one
/// metric, every `required` one, all finite. The outputs a Result gets:
/// the metrics, and their units under [`UNITS`] when any were printed.
pub fn read(
    format: &MetricsFormat,
    text: &str,
    required: &[String],
) -> Result<Map<String, Value>, MetricsError> {
    let reading = read_text(&format.spec(required), text);
    reading.check(required)?;
    Ok(reading.into_outputs())
}
