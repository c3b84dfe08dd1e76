//! Project automation, run as `cargo xtask <task>`:
//! - `cargo xtask demo`: the whole product on a generated sample repository;
//! - `cargo xtask bench <ledger|ingest|loop|serve> [--quick] [OPTIONS...]`: benchmarks, JSON lines on stdout.

mod bench;
mod demo;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "autoresearch project automation")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// The whole product on a generated sample project, in about two minutes.
    Demo(demo::DemoArgs),
    /// Run a benchmark; prints one JSON object per line.
    Bench {
        /// Which benchmark: ledger, ingest, loop or serve.
        name: String,
        /// A seconds-long version with smaller workloads.
        #[arg(long)]
        quick: bool,
        /// Options of that benchmark (for example `--executor slurm`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Demo(args) => demo::run(args),
        Task::Bench { name, quick, args } if cfg!(debug_assertions) && !debug_bench_allowed() => {
            release_bench(&name, quick, &args)
        }
        Task::Bench { name, quick, args } => bench::run(&name, quick, &args),
    }
}

/// `AUTORESEARCH_BENCH_DEBUG=1` runs benchmarks in the debug build anyway.
fn debug_bench_allowed() -> bool {
    std::env::var_os("AUTORESEARCH_BENCH_DEBUG").is_some_and(|v| v == "1")
}

/// Benchmarks measure the release build: `cargo xtask bench` (a debug build,
/// through the cargo alias) hands over to `cargo run --release -p xtask`.
fn release_bench(name: &str, quick: bool, args: &[String]) -> anyhow::Result<()> {
    use anyhow::Context;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.args([
        "run",
        "--release",
        "--quiet",
        "--package",
        "xtask",
        "--",
        "bench",
        name,
    ]);
    if quick {
        cmd.arg("--quick");
    }
    cmd.args(args);
    eprintln!("xtask: building and running the benchmark in release mode");
    let status = cmd
        .status()
        .context("starting `cargo run --release -p xtask` for the benchmark")?;
    if !status.success() {
        anyhow::bail!("benchmark {name} failed ({status})");
    }
    Ok(())
}
