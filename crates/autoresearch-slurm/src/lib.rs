//! A Slurm executor for autoresearch: every job a Slurm batch job, talked
//! to through Slurm's command-line tools (`sbatch --parsable`,
//! `scontrol show job`, `scancel`), on files under a directory every node
//! sees ([`SlurmConfig::workdir`]).
//!
//! It implements the core [`Executor`](autoresearch_core::Executor) and
//! depends on core only: the checkouts it runs jobs in come through core's
//! [`Checkouts`](autoresearch_core::Checkouts) (the CLI hands it the
//! controller's slots), and the proposer, when it runs locally, through a
//! second `Executor`. Every job id is reported to the loop as soon as it
//! exists ([`JobJournal`](autoresearch_core::JobJournal)), so that a
//! restarted controller adopts jobs instead of losing or resubmitting them.
//! Set-up on a cluster: `docs/slurm.md`.

pub mod config;
pub mod executor;
mod files;
pub mod tools;

pub use config::{OnRestart, ProposeOn, SlurmConfig, SlurmConfigError};
pub use executor::SlurmExecutor;
