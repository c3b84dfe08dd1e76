//! `autoresearch-devtools`: the project's tools that need the workspace's
//! crates, run through `cargo xtask` (which stays thin: it builds this
//! binary together with the CLI, in one cargo invocation and one profile,
//! then hands over):
//! - `demo`: the whole product on a generated sample repository;
//! - `bench NAME [--quick] [OPTIONS...]`: benchmarks, JSON lines on stdout.
//!
//! It depends on the concrete crates (store, controller, compare, runner)
//! as the CLI does, and is never published.

mod bench;
mod demo;

/// mimalloc (Microsoft's allocator, <https://github.com/microsoft/mimalloc>):
/// the ledger allocates many small values per change (decoded `Run`s, their
/// strings, encoded records), where glibc's malloc spent about a quarter of
/// `bench ledger`'s samples (`docs/benchmarks.md`). It is built with the
/// crate's `no_thp` feature: it does not ask for transparent huge pages,
/// whose first touch (2 MiB zeroed at a time) made a short process's ingest
/// 2 to 3 times slower on a `madvise` THP system when processes started a
/// second apart (`docs/benchmarks.md`, "mimalloc without transparent huge pages").
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "autoresearch-devtools",
    about = "autoresearch's demo and benchmarks (run them through `cargo xtask`)"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// The whole product on a generated sample project.
    Demo(demo::DemoArgs),
    /// Run a benchmark; prints one JSON object per line.
    Bench {
        /// Which benchmark: ledger, ingest, loop, decisions, parity, fork, serve,
        /// history or world.
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
        Task::Bench { name, quick, args } => bench::run(&name, quick, &args),
    }
}
