//! `autoresearch`: the command line. With xtask, the only place that wires
//! concrete implementations (the redb store, the runner ingester, the loop,
//! the comparators) together, through core's trait objects.

mod ledger;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "autoresearch",
    version,
    about = "Run and inspect autonomous optimization loops over a durable ECS ledger"
)]
pub struct Cli {
    /// The ledger file (created on first write).
    #[arg(
        long,
        global = true,
        env = "AUTORESEARCH_LEDGER",
        default_value = ".autoresearch/ledger.redb"
    )]
    pub ledger: PathBuf,
    /// More logging (-v, -vv); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// Each command's arguments live in the module that implements it.
#[derive(Subcommand)]
pub enum Command {
    /// List the worlds in the ledger.
    Worlds(WorldsArgs),
}

#[derive(clap::Args)]
pub struct WorldsArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

fn init_tracing(verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose, cli.quiet);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Worlds(args) => {
            let storage = ledger::open(&cli.ledger)?;
            let worlds = storage.list_worlds().await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&worlds)?);
            } else {
                for w in worlds {
                    println!("{}\t{}\t{}", w.id.0, w.name, w.head);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
