//! `autoresearch worlds rm NAME`: deletes a world (a fork, a replay, an
//! ingested world) from the ledger, through `Storage::delete_world`.
//!
//! Refused while a loop holds the world's lease (its next write would fail);
//! refused, unless `--force`, for an experiment's own world (its whole
//! history) and for a world that has forks of its own (with `--force` they
//! are deleted first, deepest first). Git branches are left alone.

use crate::ledger;
use anyhow::{Context, bail};
use autoresearch_controller::{HolderState, fork_branch_name};
use autoresearch_core::{
    Lease, Storage, World, WorldInfo, experiment_of_world, experiment_world_name,
};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  autoresearch worlds rm what-if\n  autoresearch worlds rm exp-replay-stat --force   # and its forks\n\n\
    A world a loop is running on is never deleted. Git branches (autoresearch/FORK) are left alone."
)]
pub struct RmArgs {
    /// The world to delete.
    pub name: String,
    /// Also delete its forks, or an experiment's own world.
    #[arg(long)]
    pub force: bool,
    /// Print what was deleted as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Whether a loop holds `world`'s lease now: a live process of this host,
/// or another host's whose heartbeat is recent.
async fn live_loop(storage: &Arc<dyn Storage>, info: &WorldInfo) -> anyhow::Result<Option<String>> {
    let w = World::open_at(storage.clone(), ledger::registry(), info.id, info.head)
        .await
        .with_context(|| format!("reading world {:?}", info.name))?;
    Ok(w.find_all::<Lease>(|l| l.world == info.name)
        .into_iter()
        .map(|(_, l)| l)
        .find(|l| match autoresearch_controller::holder_state(l) {
            HolderState::Alive => true,
            HolderState::Remote { heartbeat_age_ms } => heartbeat_age_ms < 120_000,
            _ => false,
        })
        .map(|l| l.to_string()))
}

/// `world` and every world forked from it, through any depth, deepest
/// first (the order they can be deleted in).
fn family(all: &[WorldInfo], world: &WorldInfo) -> Vec<WorldInfo> {
    let mut out = Vec::new();
    for child in all
        .iter()
        .filter(|w| w.parent.is_some_and(|p| p.parent == world.id))
    {
        out.extend(family(all, child));
    }
    out.push(world.clone());
    out
}

pub async fn run(ledger_path: &Path, args: RmArgs) -> anyhow::Result<ExitCode> {
    if !ledger_path.exists() {
        bail!("ledger {} does not exist", ledger_path.display());
    }
    let storage = ledger::open(ledger_path)?;
    let all = storage
        .list_worlds()
        .await
        .with_context(|| format!("listing the worlds of {}", ledger_path.display()))?;
    let info = all
        .iter()
        .find(|w| w.name == args.name)
        .or_else(|| {
            all.iter()
                .find(|w| w.name == experiment_world_name(&args.name))
        })
        .cloned()
        .with_context(|| {
            format!(
                "no world named {:?} in {} (`autoresearch worlds` lists them)",
                args.name,
                ledger_path.display()
            )
        })?;
    if info.parent.is_none() && experiment_of_world(&info.name).is_some() && !args.force {
        bail!(
            "world {:?} is an experiment's own world: deleting it loses its whole history; pass --force to delete it all the same",
            info.name
        );
    }
    let doomed = family(&all, &info);
    if doomed.len() > 1 && !args.force {
        bail!(
            "world {:?} has forks of its own ({}); delete them first or pass --force to delete them too",
            info.name,
            doomed[..doomed.len() - 1]
                .iter()
                .map(|w| w.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for w in &doomed {
        if let Some(holder) = live_loop(&storage, w).await? {
            bail!(
                "a loop is running on world {:?} ({holder}); stop it first (nothing was deleted)",
                w.name
            );
        }
    }
    let mut deleted = Vec::new();
    for w in &doomed {
        storage.delete_world(w.id).await.with_context(|| {
            format!("deleting world {:?} from {}", w.name, ledger_path.display())
        })?;
        deleted.push(w.name.clone());
    }
    if args.json {
        println!("{}", serde_json::json!({ "deleted": deleted }));
    } else {
        for name in &deleted {
            println!(
                "deleted world {name} (git branch {} is left as it is)",
                fork_branch_name(name)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
