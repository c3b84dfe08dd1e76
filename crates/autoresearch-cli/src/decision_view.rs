//! How the read commands show a run's held-out confirmation and cost
//! (`log`, `show`, `status`): small formatting helpers, kept apart from
//! the commands' own layout.

use autoresearch_core::num::fmt_f64;
use autoresearch_core::{Confirmation, EntityId, RunCost, World};
use serde_json::{Value, json};
use std::collections::HashMap;

/// Every run's Confirmation in `world`, by run id.
pub fn confirmations(world: &World) -> HashMap<String, Confirmation> {
    world
        .find_all::<Confirmation>(|_| true)
        .into_iter()
        .map(|(_, c)| (c.run_id.clone(), c))
        .collect()
}

/// The `CONFIRM` cell of `log`'s table for run `run_id`: `-` without one.
pub fn confirm_cell(all: &HashMap<String, Confirmation>, run_id: &str) -> String {
    all.get(run_id).map_or("-".to_string(), Confirmation::cell)
}

/// `show`'s line for a confirmation: its status, values and reason.
pub fn confirm_line(c: &Confirmation) -> String {
    let mut s = format!("{} ({} {})", c.status, c.metric, c.direction.short());
    if let Some(v) = c.value {
        s.push_str(&format!(" value {}", fmt_f64(v)));
    }
    if let Some(v) = c.incumbent_value {
        s.push_str(&format!(", incumbent {}", fmt_f64(v)));
    }
    if !c.reason.is_empty() {
        s.push_str(&format!(": {}", c.reason));
    }
    s
}

/// Milliseconds as seconds, for people (`1.25s`).
fn secs(ms: u64) -> String {
    format!("{}s", fmt_f64(ms as f64 / 1000.0))
}

/// One line of a cost: CPU and wall time by job kind, then the proposer's
/// cost metrics (`CPU 3.2s (propose 1s, evaluate 2.2s), wall 5s; tokens 1200`).
pub fn cost_line(c: &RunCost) -> String {
    let total = c.total();
    let mut parts = Vec::new();
    for (name, u) in [
        ("propose", c.propose),
        ("evaluate", c.evaluate),
        ("confirm", c.confirm),
    ] {
        if u.wall_ms > 0 || u.cpu_ms > 0 {
            parts.push(format!("{name} {}", secs(u.cpu_ms)));
        }
    }
    let mut s = format!(
        "CPU {} ({}), wall {}, {} jobs",
        secs(total.cpu_ms),
        parts.join(", "),
        secs(total.wall_ms),
        c.jobs
    );
    for (k, v) in &c.metrics {
        s.push_str(&format!("; {k} {}", fmt_f64(*v)));
    }
    s
}

/// A cost as JSON (milliseconds, and the metrics by name).
pub fn cost_json(c: &RunCost) -> Value {
    let total = c.total();
    json!({
        "cpu_ms": total.cpu_ms,
        "wall_ms": total.wall_ms,
        "propose": c.propose,
        "evaluate": c.evaluate,
        "confirm": c.confirm,
        "jobs": c.jobs,
        "metrics": c.metrics,
    })
}

/// Every run's cost in `world`, summed (what `[run] cost_budget` counts).
/// Metrics are summed exactly and rounded once
/// ([`autoresearch_core::current::CostTally`]), so that this recount and
/// the ledger's kept tally print the same.
pub fn world_cost(world: &World) -> RunCost {
    let mut sum = autoresearch_core::current::CostTally::default();
    for (_, c) in world.find_all::<RunCost>(|_| true) {
        sum.add(&c);
    }
    sum.to_cost()
}

/// The run's own cost and confirmation, on its entity.
pub fn run_extras(world: &World, entity: EntityId) -> (Option<RunCost>, Option<Confirmation>) {
    (
        world.get::<RunCost>(entity),
        world.get::<Confirmation>(entity),
    )
}

/// `status`'s line for `[run.cost_budget]`: what is spent of each limit,
/// or that it is spent.
pub fn budget_line(
    budget: &autoresearch_controller::config::CostBudget,
    spent: &RunCost,
) -> String {
    if let Some(why) = budget.exhausted_by(spent) {
        return format!(
            "spent ({why}): `autoresearch run` stops at once; raise [run.cost_budget] to go on"
        );
    }
    let mut parts = Vec::new();
    if let Some(cpu) = budget.cpu {
        parts.push(format!(
            "CPU {} of {}",
            secs(spent.total().cpu_ms),
            secs(cpu.0.as_millis() as u64)
        ));
    }
    if let (Some(m), Some(limit)) = (&budget.metric, budget.limit) {
        let used = spent.metrics.get(m).copied().unwrap_or(0.0);
        parts.push(format!("{m} {} of {}", fmt_f64(used), fmt_f64(limit)));
    }
    parts.join(", ")
}
