//! `cargo xtask bench world [--quick]`: the client side of a status tick,
//! alone: the `World`'s CPU per change of a run's status, commit included,
//! on the in-memory ledger (no disk, no store), for each way a caller can
//! write the change. 10,000 runs (2,000 with `--quick`), ticks of 100
//! random status changes (1% of the runs), a snapshot every 128 ticks.
//!
//! Paths: `modify` ([`World::modify`], in place), `get_insert_owned`
//! ([`World::get`], change, [`World::insert_owned`]) and `get_insert`
//! ([`World::get`], change, [`World::insert`]: the commit decodes the
//! bytes back). One JSON line per path: `cpu_ns_per_change` (the whole
//! tick, commit included, per change, in this thread's CPU time, which
//! other load on the machine changes less than wall time), and the part of
//! it spent buffering the changes (`buffer_cpu_ns_per_change`) and
//! committing (`commit_cpu_ns_per_change`); `wall_ns_per_change` too.

use super::emit;
use anyhow::{Context, Result};
use autoresearch_core::{
    ComponentRegistry, EntityId, MemoryStorage, Run, RunStatus, Storage, World,
};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// This thread's CPU time (the runtime is single-threaded: the whole
/// tick runs on it).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer for the call's duration.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The ways a caller can write a status change.
#[derive(Clone, Copy)]
enum Path {
    Modify,
    GetInsertOwned,
    GetInsert,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::Modify => "modify",
            Path::GetInsertOwned => "get_insert_owned",
            Path::GetInsert => "get_insert",
        }
    }
}

pub fn run(quick: bool, args: &[String]) -> Result<()> {
    if !args.is_empty() {
        anyhow::bail!("bench world takes no options but --quick, got {args:?}");
    }
    let (runs, ticks) = if quick { (2_000, 200) } else { (10_000, 1_000) };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .context("starting a tokio runtime")?;
    for path in [Path::Modify, Path::GetInsertOwned, Path::GetInsert] {
        rt.block_on(one(path, runs, ticks))?;
    }
    Ok(())
}

async fn one(path: Path, runs: u64, ticks: u64) -> Result<()> {
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new(Some(128)));
    let registry = Arc::new(ComponentRegistry::standard());
    let mut w = World::create(storage, registry, "world-bench").await?;
    let mut ids: Vec<EntityId> = Vec::with_capacity(runs as usize);
    for i in 0..runs {
        let mut run = Run::new(format!("run-{i:06}"), "world-bench");
        run.harness = "claude-code".into();
        run.vm_name = format!("vm-{}", i % 64);
        run.task = "improve val_bpb".into();
        ids.push(w.spawn_owned(run)?);
    }
    w.commit().await?;
    let per_tick = (runs / 100).max(1);
    let mut seed = 1u64;
    let mut below = |n: u64| {
        // splitmix64, as the ledger bench's generator.
        seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    };
    let (mut buffer, mut commit) = (Duration::ZERO, Duration::ZERO);
    let wall = Instant::now();
    for _ in 0..ticks {
        let start = thread_cpu();
        for _ in 0..per_tick {
            let e = ids[below(ids.len() as u64) as usize];
            let next = RunStatus::ALL[below(RunStatus::ALL.len() as u64) as usize];
            match path {
                Path::Modify => w.modify(e, |r: &mut Run| r.set_status(next))?,
                Path::GetInsertOwned | Path::GetInsert => {
                    let mut run: Run = w.get(e).context("a run vanished")?;
                    run.set_status(next);
                    match path {
                        Path::GetInsert => w.insert(e, &run)?,
                        _ => w.insert_owned(e, run)?,
                    }
                }
            }
        }
        let buffered = thread_cpu();
        w.commit().await?;
        buffer += buffered.saturating_sub(start);
        commit += thread_cpu().saturating_sub(buffered);
    }
    let wall = wall.elapsed();
    let changes = (ticks * per_tick) as f64;
    let ns = |d: Duration| (d.as_nanos() as f64 / changes).round();
    emit(json!({
        "bench": "world_status_changes",
        "path": path.name(),
        "runs": runs,
        "ticks": ticks,
        "changes_per_tick": per_tick,
        "cpu_ns_per_change": ns(buffer + commit),
        "buffer_cpu_ns_per_change": ns(buffer),
        "commit_cpu_ns_per_change": ns(commit),
        "wall_ns_per_change": ns(wall),
    }));
    Ok(())
}
