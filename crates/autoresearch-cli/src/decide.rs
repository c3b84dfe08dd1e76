//! Pending runs decided outside the loop (`vote` once a quorum is in):
//! the loop's controller, wired as `run` wires it, asked to decide the runs
//! waiting for votes and to stop, launching no candidate.

use crate::ledger;
use anyhow::Context;
use autoresearch_compare::CompareSpec;
use autoresearch_controller::sandbox::Sandbox;
use autoresearch_controller::{
    Config, Controller, Event, LocalExecutor, LoopConfig, LoopError, fork_branch_name,
};
use autoresearch_core::Storage;
use std::path::Path;
use std::sync::Arc;

/// What deciding the pending runs did.
pub enum Decided {
    /// The comparator was asked about each pending run.
    Done,
    /// A live loop holds the world's lease: it decides them itself.
    LoopRunning(String),
}

/// Decides the runs of `config`'s experiment waiting for votes in `world`
/// (a fork continues on its own branch, as with `run --world`), each by
/// the comparator that made it wait (recorded on its Outcome: a
/// `run --comparator 'vote:...'` as well as the config's `[compare]`).
pub async fn pending(
    ledger_path: &Path,
    storage: Arc<dyn Storage>,
    config: &Config,
    world: &str,
    quiet: bool,
) -> anyhow::Result<Decided> {
    let mut specs: Vec<String> = Vec::new();
    if let Ok(w) = autoresearch_core::World::open(storage.clone(), ledger::registry(), world).await
    {
        for a in autoresearch_core::lifecycle::attempts(&w, &config.name) {
            if let Some(o) = a.outcome.filter(|o| {
                o.status == autoresearch_core::OutcomeStatus::Pending
                    && !o.comparator.is_empty()
                    && o.comparator != autoresearch_core::lifecycle::Outcome::PROMOTED_BY_FORK
            }) && !specs.contains(&o.comparator)
            {
                specs.push(o.comparator);
            }
        }
    }
    if specs.is_empty() {
        return decide_with(ledger_path, storage, config, world, quiet, None).await;
    }
    for spec in &specs {
        if let Decided::LoopRunning(holder) = decide_with(
            ledger_path,
            storage.clone(),
            config,
            world,
            quiet,
            Some(spec),
        )
        .await?
        {
            return Ok(Decided::LoopRunning(holder));
        }
    }
    Ok(Decided::Done)
}

/// [`pending`] with one comparator: `spec`, else the config's.
async fn decide_with(
    ledger_path: &Path,
    storage: Arc<dyn Storage>,
    config: &Config,
    world: &str,
    quiet: bool,
    spec: Option<&str>,
) -> anyhow::Result<Decided> {
    let (comparator, needed, diff) = crate::experiment::comparator(config, spec)?;
    let mut cfg = LoopConfig::from_config(config);
    cfg.evidence_diff = diff;
    cfg.primary_metric = CompareSpec::parse(&comparator.spec())
        .ok()
        .and_then(|spec| spec.objectives().into_iter().next())
        .map(|(metric, _)| metric);
    for m in needed {
        if !cfg.require.contains(&m) {
            cfg.require.push(m);
        }
    }
    if world != cfg.world {
        cfg.branch = fork_branch_name(world);
        cfg.world = world.to_string();
    }
    cfg.lease_lock = Some(ledger::lease_lock_path(ledger_path, &cfg.world));
    let sandbox = Sandbox::new(config.sandbox())
        .with_context(|| format!("preparing the jobs' sandbox ({})", config.path.display()))?;
    let executor =
        Arc::new(LocalExecutor::new(cfg.state_dir.clone()).with_sandbox(sandbox.clone()));
    // `vote` prints the decision itself; only warnings are shown here, on
    // stderr, so that `vote --json` stays one JSON document.
    let controller = Controller::open(cfg.clone(), storage, comparator, executor)
        .await
        .with_context(|| {
            format!(
                "opening the loop of {:?} to decide its votes",
                cfg.experiment
            )
        })?
        .with_events(Arc::new(move |e| {
            if let Event::Warning(w) = e
                && !quiet
            {
                eprintln!("warning: {w}");
            }
        }));
    match Arc::new(controller).decide_pending().await {
        Ok(_) => Ok(Decided::Done),
        Err(LoopError::LeaseHeld { holder, .. }) => Ok(Decided::LoopRunning(holder)),
        Err(e) => Err(e).context("deciding the runs waiting for votes"),
    }
}
