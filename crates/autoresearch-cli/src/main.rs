//! `autoresearch`: the command line. With xtask, the only place that wires
//! concrete implementations (the redb store, the runner ingester, the loop,
//! the comparators) together, through core's trait objects.

mod check;
mod compare_cmds;
mod current_read;
mod decide;
mod decision_view;
mod doctor;
mod executors;
mod experiment;
mod human;
mod ingest;
mod ledger;
mod log;
mod noise_status;
#[cfg(feature = "plot")]
mod plot;
mod program;
mod progress;
mod read;
#[cfg(feature = "web")]
mod serve;
mod show;
mod status;
mod target;
mod worlds_rm;

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
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "autoresearch",
    version,
    about = "Run and inspect autonomous optimization loops over a durable ECS ledger"
)]
pub(crate) struct Cli {
    /// The ledger file (created on first write).
    #[arg(
        long,
        global = true,
        env = "AUTORESEARCH_LEDGER",
        default_value = ".autoresearch/ledger.redb",
        help_heading = "Global options"
    )]
    pub ledger: PathBuf,
    /// More logging (-v, -vv); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = "Global options")]
    pub verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true, help_heading = "Global options")]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// Each command's arguments live in the module that implements it;
/// `--help` lists them in the order of the workflow (`display_order`).
#[derive(Subcommand)]
pub enum Command {
    /// List the worlds in the ledger (name, head tick, entities, fork parent).
    #[command(display_order = 13)]
    Worlds(read::WorldsArgs),
    /// Bring outside history in: archetype-runner's state.db, or a results.tsv.
    #[command(display_order = 16)]
    Ingest(ingest::IngestArgs),
    /// List the runs of a world, now or at a past tick.
    #[command(display_order = 14)]
    Runs(read::RunsArgs),
    /// Every change to one run, with tick and time.
    #[command(display_order = 15)]
    History(read::HistoryArgs),
    /// An experiment's attempts as a table: parameters, metrics, decision, idea, reason.
    #[command(display_order = 4)]
    Log(log::LogArgs),
    /// Write a commented autoresearch.toml and the agent's program.md for this repository.
    #[command(display_order = 1)]
    Init(experiment::InitArgs),
    /// Check the config before it costs anything: the commands exist, the
    /// repository and branch are sane, the baseline evaluation prints every
    /// metric needed (`run` starts with this).
    #[command(display_order = 2)]
    Check(check::CheckArgs),
    /// Run the loop: propose, evaluate, compare, keep or discard, repeat.
    #[command(display_order = 2)]
    Run(experiment::RunArgs),
    /// The experiment's head, branch, counts, runs in flight and votes (--watch to follow).
    #[command(display_order = 3)]
    Status(status::StatusArgs),
    /// One run: decision, idea, times, metrics and samples, evidence, diff stat, logs.
    #[command(display_order = 6)]
    Show(show::ShowArgs),
    /// Re-decide an experiment's candidates under another comparator, into a fork.
    #[command(display_order = 11)]
    Replay(compare_cmds::ReplayArgs),
    /// Fork an experiment at a tick with a chosen run as head.
    #[command(display_order = 12)]
    Fork(compare_cmds::ForkArgs),
    /// Vote keep or discard on a run waiting for votes.
    #[command(display_order = 10)]
    Vote(compare_cmds::VoteArgs),
    /// Check every world of the ledger (replay, snapshots, index, names,
    /// leases); --repair saves what is readable of a damaged world.
    #[command(display_order = 17)]
    Doctor(doctor::DoctorArgs),
    /// Draw an experiment's progress chart (SVG, or PNG for a .png path).
    #[cfg(feature = "plot")]
    #[command(display_order = 9)]
    Plot(plot::PlotArgs),
    /// The best attempt: the head, its metrics and its gain over the baseline.
    #[command(display_order = 5)]
    Best(show::BestArgs),
    /// The diff between two runs' candidate commits.
    #[command(display_order = 7)]
    Diff(show::DiffArgs),
    /// Check a run's candidate out on a new branch (or in a new worktree).
    #[command(display_order = 8)]
    Checkout(show::CheckoutArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(
        after_help = "Examples:\n  autoresearch completions bash > ~/.local/share/bash-completion/completions/autoresearch\n  autoresearch completions zsh > \"${fpath[1]}/_autoresearch\"\n  autoresearch completions fish > ~/.config/fish/completions/autoresearch.fish"
    )]
    #[command(display_order = 18)]
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Serve a live web dashboard of every experiment in the ledger.
    #[cfg(feature = "web")]
    Serve(serve::ServeArgs),
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
        // Colour only on a terminal: a log file gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Restores the default SIGPIPE action, so that `autoresearch log | head`
/// ends quietly when the reader goes away, as Unix tools do, instead of
/// failing on a write to a closed pipe. Only for commands that start no
/// child process: `run` and `replay` write to a judge's stdin, where a
/// closed pipe must be an error to record, not the end of the loop.
fn default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread exists; setting a
    // signal's disposition to its default has no other effect.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Worlds(_)
            | Command::Runs(_)
            | Command::History(_)
            | Command::Log(_)
            | Command::Status(_)
            | Command::Show(_)
            | Command::Best(_)
            | Command::Diff(_)
            | Command::Completions { .. }
    ) {
        default_sigpipe();
    }
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
            eprintln!("error: {}", error_text(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes joined by `: `, leaving out a cause whose text
/// the message before it already ends with (library errors that print
/// their source as part of their own message would otherwise show it twice:
/// `reading config x: No such file (os error 2): No such file (os error 2)`).
pub(crate) fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.ends_with(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        #[cfg(feature = "plot")]
        Command::Plot(args) => plot::run(&cli.ledger, args).await?,
        Command::Worlds(args) => {
            return match args.action {
                Some(read::WorldsAction::Rm(rm)) => worlds_rm::run(&cli.ledger, rm).await,
                None => read::worlds(&cli.ledger, args).await,
            };
        }
        Command::Ingest(args) => return ingest::run(&cli.ledger, args).await,
        Command::Runs(args) => return read::runs(&cli.ledger, args).await,
        Command::History(args) => return read::history(&cli.ledger, args).await,
        Command::Log(args) => return log::log(&cli.ledger, args).await,
        Command::Init(args) => return experiment::init(args),
        Command::Check(args) => return check::check_cmd(args).await,
        Command::Run(args) => return experiment::run(&cli.ledger, args, cli.quiet).await,
        Command::Status(args) => return status::status(&cli.ledger, args).await,
        Command::Show(args) => return show::show(&cli.ledger, args).await,
        Command::Best(args) => return show::best(&cli.ledger, args).await,
        Command::Diff(args) => return show::diff(&cli.ledger, args).await,
        Command::Checkout(args) => return show::checkout(&cli.ledger, args).await,
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "autoresearch", &mut std::io::stdout());
        }
        Command::Replay(args) => return compare_cmds::replay_cmd(&cli.ledger, args).await,
        Command::Fork(args) => return compare_cmds::fork_cmd(&cli.ledger, args).await,
        Command::Vote(args) => return compare_cmds::vote_cmd(&cli.ledger, args, cli.quiet).await,
        Command::Doctor(args) => return doctor::run(&cli.ledger, args).await,
        #[cfg(feature = "web")]
        Command::Serve(args) => return serve::run(&cli.ledger, args).await,
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::error_text;
    use std::fmt;

    /// An error that prints its source in its own message, as many do.
    #[derive(Debug)]
    struct Reading(std::io::Error);

    impl fmt::Display for Reading {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "reading config x.toml: {}", self.0)
        }
    }

    impl std::error::Error for Reading {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn each_cause_is_printed_once() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::new(Reading(io())).context("status");
        assert_eq!(
            error_text(&e),
            "status: reading config x.toml: no such file"
        );
        // A cause not already in the message is still shown.
        let e = anyhow::Error::new(io()).context("opening the ledger");
        assert_eq!(error_text(&e), "opening the ledger: no such file");
    }
}
