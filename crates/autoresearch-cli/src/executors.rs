//! Which executor runs the jobs (`[run] executor`): the local one, or
//! Slurm's (`[slurm]`), wired here as everything concrete is.

use anyhow::Context;
use autoresearch_controller::sandbox::Sandbox;
use autoresearch_controller::{Config, ExecutorKind, LocalExecutor, SlotCheckouts};
use autoresearch_core::Executor;
use autoresearch_slurm::{SlurmConfig, SlurmExecutor};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The executor `config` asks for; local jobs run in `sandbox`, with their
/// slots and logs under `state_dir`, and `held_out` hidden from every job
/// but confirm jobs (`[confirm] data`).
pub fn build(
    config: &Config,
    state_dir: &Path,
    sandbox: Sandbox,
    held_out: Vec<PathBuf>,
) -> anyhow::Result<Arc<dyn Executor>> {
    let local = Arc::new(
        LocalExecutor::new(state_dir)
            .with_sandbox(sandbox)
            .with_held_out(held_out),
    );
    match config.run.executor {
        ExecutorKind::Local => Ok(local),
        ExecutorKind::Slurm => {
            let table = config.slurm.clone().unwrap_or_default();
            let slurm = SlurmConfig::from_table(table, &config.path)
                .with_context(|| format!("reading {}", config.path.display()))?;
            std::fs::create_dir_all(&slurm.workdir).with_context(|| {
                format!(
                    "creating the Slurm work directory {} ([slurm] workdir in {})",
                    slurm.workdir.display(),
                    config.path.display()
                )
            })?;
            let checkouts = Arc::new(SlotCheckouts::new(slurm.workdir.join("slots")));
            Ok(Arc::new(SlurmExecutor::new(slurm, checkouts, local)))
        }
    }
}
