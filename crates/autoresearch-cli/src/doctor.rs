//! `doctor`: checks every world of the ledger (core's `doctor`: a replay
//! from tick 0 of every lineage, snapshots against the replay, the entity
//! index, unique names) and says what the loop's own records show (leases
//! whose holder is gone, runs in flight with no loop). `--repair` saves
//! what is readable of a damaged world as a fork and deletes nothing.

use crate::ledger;
use anyhow::Context;
use autoresearch_controller::{HolderState, holder_state};
use autoresearch_core::doctor::{Problem, WorldReport, check_ledger, repair_world};
use autoresearch_core::lifecycle::attempts;
use autoresearch_core::{AttemptState, Experiment, Lease, Storage, World};
use serde_json::json;
use std::path::Path;
use std::process::ExitCode;

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  autoresearch doctor\n  \
    autoresearch doctor --repair\n\n\
    Exit status: 0 when every world is sound, 1 when a problem was found \
    (also after --repair saved what was readable: the damaged world stays \
    as it is).")]
pub struct DoctorArgs {
    /// Save what is readable of each world whose log stops replaying, as a
    /// fork at the last readable tick named `{world}.repaired` (nothing is
    /// deleted or changed in the damaged world).
    #[arg(long)]
    pub repair: bool,
    /// Print one JSON object per world.
    #[arg(long)]
    pub json: bool,
}

/// What the loop's records of one world say (not problems of the ledger).
fn loop_notes(w: &World) -> Vec<String> {
    let mut notes = Vec::new();
    let mut live_loop = false;
    for (_, lease) in w.find_all::<Lease>(|l| l.world == w.name()) {
        match holder_state(&lease) {
            HolderState::Released => {}
            HolderState::Alive => {
                live_loop = true;
                notes.push(format!("a loop is running it ({lease})"));
            }
            HolderState::Dead => notes.push(format!(
                "its lease is held by {lease}, which is gone: the next `run` takes it over"
            )),
            HolderState::Remote { heartbeat_age_ms } => {
                live_loop = true;
                notes.push(format!(
                    "its lease is held by {lease} (last heartbeat {} s ago)",
                    heartbeat_age_ms / 1000
                ));
            }
        }
    }
    if live_loop {
        return notes;
    }
    for (_, exp) in w.find_all::<Experiment>(|e| e.is_run_by_loop()) {
        let in_flight = attempts(w, &exp.name)
            .iter()
            .filter(|a| AttemptState::of(&a.run, a.outcome.as_ref()).is_in_flight())
            .count();
        if in_flight > 0 {
            notes.push(format!(
                "{in_flight} run(s) of experiment {} in flight with no loop running: the next `run` recovers them",
                exp.name
            ));
        }
    }
    notes
}

/// A world name not in use, for a repaired copy of `name`.
async fn free_name(storage: &dyn Storage, name: &str) -> anyhow::Result<String> {
    for i in 1..1000 {
        let candidate = if i == 1 {
            format!("{name}.repaired")
        } else {
            format!("{name}.repaired-{i}")
        };
        if storage.find_world(&candidate).await?.is_none() {
            return Ok(candidate);
        }
    }
    anyhow::bail!("no free name like {name}.repaired")
}

fn print_report(r: &WorldReport, notes: &[String], repaired: Option<&str>) {
    let i = &r.info;
    if r.is_sound() {
        println!(
            "ok       {} ({}, head {}, {} snapshot(s) and {} entities checked)",
            i.name, i.id, i.head, r.snapshots_checked, r.entities_checked
        );
    } else {
        println!("PROBLEM  {} ({}, head {})", i.name, i.id, i.head);
        for p in &r.problems {
            println!("         - {p}");
        }
    }
    for n in notes {
        println!("         note: {n}");
    }
    if let Some(name) = repaired {
        println!(
            "         repaired: ticks up to {} saved as world {name:?} (the damaged world is unchanged)",
            r.replayed_to
        );
    }
}

/// Runs the checks; see [`DoctorArgs`].
pub async fn run(ledger_path: &Path, args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let storage = if args.repair {
        ledger::open(ledger_path)?
    } else {
        ledger::open_read_only(ledger_path)?
    };
    let reports = check_ledger(storage.as_ref())
        .await
        .with_context(|| format!("checking ledger {}", ledger_path.display()))?;
    let mut problems = 0;
    for r in &reports {
        problems += r.problems.len();
        let notes = match World::open_at(
            storage.clone(),
            ledger::registry(),
            r.info.id,
            r.replayed_to,
        )
        .await
        {
            Ok(w) => loop_notes(&w),
            Err(e) => vec![format!(
                "cannot read its state at tick {}: {e}",
                r.replayed_to
            )],
        };
        let unreplayable = r
            .problems
            .iter()
            .any(|p| matches!(p, Problem::Unreplayable { .. }));
        let repaired = if args.repair && unreplayable {
            let name = free_name(storage.as_ref(), &r.info.name).await?;
            repair_world(storage.as_ref(), r.info.id, r.replayed_to, &name)
                .await
                .with_context(|| format!("saving the readable part of {:?}", r.info.name))?;
            Some(name)
        } else {
            None
        };
        if args.json {
            let v = json!({
                "world": r.info.name,
                "id": r.info.id.0,
                "head": r.info.head.0,
                "replayed_to": r.replayed_to.0,
                "snapshots_checked": r.snapshots_checked,
                "entities_checked": r.entities_checked,
                "problems": r.problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "notes": notes,
                "repaired_as": repaired,
            });
            println!("{v}");
        } else {
            print_report(r, &notes, repaired.as_deref());
        }
    }
    // The file's own structures, beyond what the worlds' replays read.
    let file_problems = storage
        .check_structure()
        .await
        .with_context(|| format!("checking the structure of ledger {}", ledger_path.display()))?;
    problems += file_problems.len();
    if args.json {
        if !file_problems.is_empty() {
            println!(
                "{}",
                json!({"file": ledger_path.display().to_string(), "problems": file_problems})
            );
        }
    } else {
        for p in &file_problems {
            println!("DAMAGED  file {}: {p}", ledger_path.display());
        }
        println!(
            "{} world(s) checked, {problems} problem(s) found",
            reports.len()
        );
    }
    Ok(if problems == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
