//! Benchmarks. Each prints JSON objects, one per line, on stdout; progress
//! goes to stderr. Compare ratios measured in one run: the machine is noisy.

mod decisions;
mod history;
mod ingest;
mod ledger;
mod loop_;
mod parity;
mod serve;

use anyhow::bail;

/// Prints one benchmark figure as a JSON line.
pub fn emit(value: serde_json::Value) {
    println!("{value}");
}

/// Runs benchmark `name`; `args` are its own options (none for the ones
/// below, which refuse any).
pub fn run(name: &str, quick: bool, args: &[String]) -> anyhow::Result<()> {
    let takes_no_options = matches!(name, "ingest" | "ledger");
    if takes_no_options && !args.is_empty() {
        bail!("benchmark {name} takes no options, got {args:?}");
    }
    match name {
        "ingest" => ingest::run(quick),
        "ledger" => ledger::run(quick),
        "loop" => loop_::run(quick, args),
        "decisions" => decisions::run(quick, args),
        "parity" => parity::run(quick, args),
        "serve" => serve::run(quick, args),
        "history" => history::run(quick, args),
        other => bail!(
            "unknown benchmark {other:?} (expected ledger, ingest, loop, decisions, parity, serve or history)"
        ),
    }
}
