//! Benchmarks. Each prints JSON objects, one per line, on stdout; progress
//! goes to stderr. Compare ratios measured in one run: the machine is noisy.

mod ingest;
mod ledger;
mod loop_;

use anyhow::bail;

/// Prints one benchmark figure as a JSON line.
pub fn emit(value: serde_json::Value) {
    println!("{value}");
}

pub fn run(name: &str, quick: bool) -> anyhow::Result<()> {
    let _ = quick;
    match name {
        "ingest" => ingest::run(quick),
        "ledger" => ledger::run(quick),
        "loop" => loop_::run(quick),
        other => bail!("unknown benchmark {other:?} (expected ledger, ingest or loop)"),
    }
}
