//! Project automation, run as `cargo xtask <task>`:
//! - `cargo xtask demo`: the whole product on a generated sample repository;
//! - `cargo xtask bench <ledger|ingest|loop> [--quick]`: benchmarks, JSON lines on stdout.

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
        /// Which benchmark: ledger, ingest or loop.
        name: String,
        /// A seconds-long version with smaller workloads.
        #[arg(long)]
        quick: bool,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Demo(args) => demo::run(args),
        Task::Bench { name, quick } => bench::run(&name, quick),
    }
}
