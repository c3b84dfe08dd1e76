//! This workspace's run of the workload, phase by phase, through the public
//! API, each phase checked against the expected statuses.

use super::state_db::{Rng, make_state_db, next_status};
use super::{Options, Ours, emit_as, median, merge, round};
use anyhow::{Context, Result, ensure};
use autoresearch_core::{
    ComponentRegistry, EntityId, Run, RunRef, Storage, Tick, TickWriter, World, ledger,
};
use autoresearch_runner::{RunnerConfig, RunnerIngest};
use autoresearch_store::{RedbConfig, RedbStorage};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// Bytes each table of the ledger takes (name -> stored + metadata +
/// fragmented bytes, as redb counts them).
async fn table_bytes(redb: &RedbStorage) -> Result<serde_json::Map<String, Value>> {
    Ok(redb
        .table_bytes()
        .await?
        .into_iter()
        .map(|t| (t.name.clone(), json!(t.total())))
        .collect())
}

/// du-style bytes (`st_blocks * 512`), apparent bytes and file count under `dir`.
fn dir_bytes(dir: &Path) -> (u64, u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let (mut blocks, mut apparent, mut files) = (0, 0, 0);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, 0, 0);
    };
    for e in entries.flatten() {
        let Ok(m) = e.metadata() else { continue };
        if m.is_dir() {
            let (b, a, f) = dir_bytes(&e.path());
            (blocks, apparent, files) = (blocks + b, apparent + a, files + f);
        } else {
            blocks += m.blocks() * 512;
            apparent += m.size();
            files += 1;
        }
    }
    (blocks, apparent, files)
}

fn storage_fields(dir: &Path) -> Value {
    let (b, a, f) = dir_bytes(dir);
    json!({"storage_bytes": b, "storage_apparent_bytes": a, "storage_files": f})
}

/// Every run at `tick` as stored, read without materializing a world: the
/// query the reference's `query_archetype((Run,), ticks=[t])` answers.
async fn runs_at(
    storage: &dyn Storage,
    registry: &ComponentRegistry,
    world: autoresearch_core::WorldId,
    tick: Tick,
) -> Result<ledger::ComponentValues> {
    Ok(ledger::component_values_at::<Run>(storage, registry, world, tick).await?)
}

/// Every run decoded as a borrowed [`RunRef`] (all fields, no copy of the
/// text): the table the reference's `.to_arrow()` builds.
fn decode_runs(runs: &ledger::ComponentValues) -> Result<Vec<(EntityId, RunRef<'_>)>> {
    let mut table = Vec::with_capacity(runs.len());
    for (e, b) in runs.iter() {
        table.push((
            e,
            RunRef::decode(b).with_context(|| format!("decoding the run of {e}"))?,
        ));
    }
    Ok(table)
}

fn status_map(runs: &ledger::ComponentValues) -> Result<HashMap<EntityId, String>> {
    Ok(decode_runs(runs)?
        .into_iter()
        .map(|(e, r)| (e, r.status.to_string()))
        .collect())
}

/// One first sync of `db` into a fresh durable ledger in a fresh child
/// process (`exe bench ingest --state-db db --reps 1`), or with `plain`
/// a plain ingest of it with the same libraries (`--plain`):
/// seconds, as that process timed it (the ingest alone, not the process's
/// start).
pub(super) fn first_sync_in_child(exe: &Path, db: &Path, plain: bool) -> Result<f64> {
    let out = std::process::Command::new(exe)
        .args(["bench", "ingest", "--state-db"])
        .arg(db)
        .args(["--reps", "1"])
        .args(plain.then_some("--plain"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {} bench ingest", exe.display()))?;
    ensure!(
        out.status.success(),
        "bench ingest --state-db {} failed ({})",
        db.display(),
        out.status
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v.get("rep").and_then(Value::as_u64) == Some(0))
        .and_then(|v| v.get("ms").and_then(Value::as_f64))
        .map(|ms| ms / 1e3)
        .with_context(|| format!("bench ingest --state-db {} printed no time", db.display()))
}

pub(super) async fn case(
    dir: &Path,
    n: usize,
    ticks: usize,
    o: &Options,
    reference_db: Option<&Path>,
) -> Result<Ours> {
    let engine = "autoresearch";
    let line = |mut v: Value| emit_as(&mut v, engine, n, ticks);
    let db = dir.join("state.db");
    let t0 = Instant::now();
    match reference_db {
        Some(src) => {
            std::fs::copy(src, &db)
                .with_context(|| format!("copying the reference's {}", src.display()))?;
            line(
                json!({"phase": "make_db", "source": "reference", "wall_s": 0.0,
                "db_bytes": std::fs::metadata(&db)?.len()}),
            );
        }
        None => {
            let counts = make_state_db(&db, n, o.seed)?;
            line(json!({"phase": "make_db", "source": "generated",
                "wall_s": round(t0.elapsed().as_secs_f64(), 4),
                "db_bytes": std::fs::metadata(&db)?.len(), "status_counts": counts}));
        }
    }

    // ---- setup -------------------------------------------------------------
    let store = dir.join("store");
    let t0 = Instant::now();
    let redb = Arc::new(RedbStorage::open(
        &store.join("ledger.redb"),
        RedbConfig::default(),
    )?);
    let storage: Arc<dyn Storage> = redb.clone();
    let registry = Arc::new(autoresearch_runner::registry());
    let mut v = json!({"phase": "setup", "wall_s": round(t0.elapsed().as_secs_f64(), 4),
        "storage": storage.location(), "durable": true});
    merge(&mut v, &storage_fields(&store));
    line(v);

    // ---- ingest ------------------------------------------------------------
    let t0 = Instant::now();
    let mut ingest = RunnerIngest::new(storage.clone(), registry.clone(), RunnerConfig::new(&db));
    let report = ingest.sync().await.context("ingesting the state.db")?;
    let ingest_s = t0.elapsed().as_secs_f64();
    ensure!(
        report.runs_added == n,
        "ingest added {} runs, expected {n}",
        report.runs_added
    );
    let after_ingest = dir_bytes(&store);
    let tables = table_bytes(&redb).await?;
    let fields = storage_fields(&store);
    let mut v = json!({"phase": "ingest", "n": n, "wall_s": round(ingest_s, 4),
        "rows_per_s": round(n as f64 / ingest_s, 1), "world_tick_after": report.tick,
        "read_path": report.read_path, "storage_size": storage.size_bytes().await?,
        "table_bytes": tables});
    merge(&mut v, &fields);
    line(v);

    // ---- updates -----------------------------------------------------------
    let t_phase = Instant::now();
    let t0 = Instant::now();
    let mut world = World::open(storage.clone(), registry.clone(), &report.world).await?;
    let open_s = t0.elapsed().as_secs_f64();
    let ingest_tick = world.tick();
    let runs = world.find_all::<Run>(|_| true);
    ensure!(
        runs.len() == n,
        "the world holds {} runs, expected {n}",
        runs.len()
    );
    let entities: Vec<EntityId> = runs.iter().map(|(e, _)| *e).collect();
    let mut current: Vec<String> = runs.into_iter().map(|(_, r)| r.status).collect();
    let expected_at = |current: &[String]| -> HashMap<EntityId, String> {
        entities
            .iter()
            .copied()
            .zip(current.iter().cloned())
            .collect()
    };
    let expected_ingest = expected_at(&current);
    let k = ((n as f64 * o.update_frac).round() as usize).max(1);
    let mut rng = Rng(o.seed + 1);
    let mut pool: Vec<usize> = (0..n).collect();
    let (mut upd_s, mut step_s) = (0.0, 0.0);
    let mut per_tick = Vec::with_capacity(ticks);
    let mut expected_early = None;
    for _ in 0..ticks {
        let chosen = rng.sample(&mut pool, k);
        let ta = Instant::now();
        for i in chosen {
            let e = entities[i];
            let mut run: Run = world.get(e).context("a chosen run is gone")?;
            run.status = next_status(&run.status).to_string();
            current[i] = run.status.clone();
            world.insert_owned(e, run)?;
        }
        let tb = Instant::now();
        world.commit().await?;
        let tc = Instant::now();
        upd_s += (tb - ta).as_secs_f64();
        step_s += (tc - tb).as_secs_f64();
        per_tick.push((tc - ta).as_secs_f64());
        if expected_early.is_none() {
            expected_early = Some(expected_at(&current));
        }
    }
    let updates_s = t_phase.elapsed().as_secs_f64();
    let last_tick = world.tick();
    let expected_last = expected_at(&current);
    let after_updates = dir_bytes(&store);
    let bytes_per_tick = (after_updates.0 as f64 - after_ingest.0 as f64) / ticks as f64;
    let mut sorted = per_tick.clone();
    let mut v = json!({"phase": "updates", "ticks": ticks, "updates_per_tick": k,
        "changes": ticks * k, "wall_s": round(updates_s, 4), "open_world_s": round(open_s, 4),
        "update_entity_s": round(upd_s, 4), "step_s": round(step_s, 4),
        "ticks_per_s": round(ticks as f64 / updates_s, 3),
        "changes_per_s": round((ticks * k) as f64 / updates_s, 1),
        "tick_ms_first": round(per_tick[0] * 1e3, 2),
        "tick_ms_median": round(median(&mut sorted) * 1e3, 2),
        "tick_ms_last": round(per_tick[ticks - 1] * 1e3, 2),
        "first_update_tick": ingest_tick.0 + 1, "last_tick": last_tick.0,
        "bytes_per_tick": round(bytes_per_tick, 0),
        "table_bytes": table_bytes(&redb).await?});
    merge(&mut v, &storage_fields(&store));
    line(v);

    // ---- time travel -------------------------------------------------------
    let early_tick = Tick(ingest_tick.0 + 1);
    let expected_early = expected_early.unwrap_or_else(|| expected_ingest.clone());
    let mut tt = serde_json::Map::new();
    let mut medians = [0.0; 2];
    let mut all_ok = true;
    for (slot, (label, t, expected)) in [
        ("early", early_tick, &expected_early),
        ("last", last_tick, &expected_last),
    ]
    .into_iter()
    .enumerate()
    {
        let mut times = Vec::new();
        let mut got = ledger::ComponentValues::default();
        for _ in 0..o.tt_reps.max(1) {
            let ta = Instant::now();
            got = runs_at(storage.as_ref(), &registry, world.id(), t).await?;
            let table = decode_runs(&got)?;
            times.push(ta.elapsed().as_secs_f64());
            ensure!(table.len() == n, "{} runs at tick {t}", table.len());
        }
        // Of which: the type-agnostic state (snapshot, replay), without
        // decoding the runs.
        let mut state_times = Vec::new();
        for _ in 0..o.tt_reps.max(1) {
            let ta = Instant::now();
            let state = ledger::state_at(storage.as_ref(), world.id(), t).await?;
            state_times.push(ta.elapsed().as_secs_f64());
            ensure!(
                state.entities.len() == n,
                "state_at holds {} entities",
                state.entities.len()
            );
        }
        let ok = status_map(&got)? == *expected;
        all_ok &= ok;
        let (min, max) = (
            times.iter().copied().fold(f64::INFINITY, f64::min),
            times.iter().copied().fold(0.0, f64::max),
        );
        medians[slot] = median(&mut times);
        tt.insert(
            label.into(),
            json!({"tick": t.0, "median_s": round(medians[slot], 6),
            "state_at_median_s": round(median(&mut state_times), 6),
            "min_s": round(min, 6), "max_s": round(max, 6), "rows": got.len(), "ok": ok}),
        );
    }
    let differs = entities
        .iter()
        .filter(|e| expected_early.get(e) != expected_last.get(e))
        .count();
    let mut v = json!({"phase": "time_travel", "reps": o.tt_reps,
        "read": "ledger::component_values_at + RunRef::decode", "entities_status_differs_early_vs_last": differs,
        "ok": all_ok});
    merge(&mut v, &Value::Object(tt));
    line(v);
    ensure!(
        all_ok,
        "time travel returned statuses other than the expected ones"
    );

    // ---- fork --------------------------------------------------------------
    // Four ways to fork at the head and write one tick on the fork, each
    // checked: the fork's head holds the source's last state plus its own
    // change, and its view of the early tick (through lineage) the source's.
    let e = entities[0];
    let mut fork_expected = expected_last.clone();
    let mut changed: Run = world.get(e).context("the source lacks a run")?;
    changed.status = next_status(&changed.status).to_string();
    fork_expected.insert(e, changed.status.clone());
    let check = |id, tick| {
        let (storage, registry) = (storage.clone(), registry.clone());
        async move {
            let state = status_map(&runs_at(storage.as_ref(), &registry, id, tick).await?)?;
            let hist = status_map(&runs_at(storage.as_ref(), &registry, id, early_tick).await?)?;
            anyhow::Ok((state, hist))
        }
    };
    // 1. A TickWriter on the fork: no world materialized (for writers that
    //    know the entities they write, as the ingest does).
    //    The fork is made by its first commit (one durable write).
    let t0 = Instant::now();
    let mut writer = TickWriter::fork_on_commit(
        storage.clone(),
        registry.clone(),
        world.id(),
        last_tick,
        "runner-fleet:fork-writer",
        world.next_entity(),
    );
    writer.set(e, &changed)?;
    let writer_tick = writer.commit().await?;
    let writer_s = t0.elapsed().as_secs_f64();
    let (state, hist) = check(writer.info().id, writer_tick).await?;
    let writer_ok = state == fork_expected && hist == expected_early;
    // 2. World::fork_world: a second, writable World (the source's state copied).
    let t0 = Instant::now();
    let mut fork = world.fork_world(last_tick, "runner-fleet:fork").await?;
    let copy_fork_s = t0.elapsed().as_secs_f64();
    fork.insert_owned(e, changed.clone())?;
    let copy_tick = fork.commit().await?;
    let copy_s = t0.elapsed().as_secs_f64();
    let (state, hist) = check(fork.id(), copy_tick).await?;
    let copy_ok = state == fork_expected && hist == expected_early;
    drop(fork);
    // 3. World::fork_in_place then World::commit: the source's handle
    //    becomes the fork (O(1)), then its tick (two durable commits).
    let source = world.id();
    let t0 = Instant::now();
    let info = world.fork_in_place("runner-fleet:fork-in-place").await?;
    let t1 = Instant::now();
    world.insert_owned(e, changed.clone())?;
    let in_place_tick = world.commit().await?;
    let t2 = Instant::now();
    let in_place_s = (t2 - t0).as_secs_f64();
    let (state, hist) = check(info.id, in_place_tick).await?;
    let in_place_ok = state == fork_expected && hist == expected_early;
    // 4. World::commit_as_fork: the fork and its first tick in one durable
    //    commit, from the source's head (reopened, untimed).
    let mut world = World::open_id(storage.clone(), registry.clone(), source).await?;
    let t0 = Instant::now();
    world.insert_owned(e, changed.clone())?;
    let info = world.commit_as_fork("runner-fleet:fork-commit").await?;
    let fork_s = t0.elapsed().as_secs_f64();
    let fork_tick = info.head;
    let (state, hist) = check(info.id, fork_tick).await?;
    let (state_ok, hist_ok) = (state == fork_expected, hist == expected_early);
    let mut v = json!({"phase": "fork", "wall_s": round(fork_s, 5), "how": "World::commit_as_fork",
        "fork_tick_written": fork_tick.0,
        "fork_rows": state.len(), "fork_state_ok": state_ok,
        "fork_history_via_lineage_ok": hist_ok,
        "in_place_wall_s": round(in_place_s, 5),
        "in_place_fork_world_s": round((t1 - t0).as_secs_f64(), 5),
        "in_place_step_s": round((t2 - t1).as_secs_f64(), 5), "in_place_ok": in_place_ok,
        "tick_writer_wall_s": round(writer_s, 5), "tick_writer_ok": writer_ok,
        "copy_wall_s": round(copy_s, 5), "copy_fork_world_s": round(copy_fork_s, 5),
        "copy_ok": copy_ok});
    merge(&mut v, &storage_fields(&store));
    line(v);
    ensure!(
        state_ok && hist_ok && writer_ok && copy_ok && in_place_ok,
        "a fork's state or history is not the expected one"
    );

    // ---- storage -----------------------------------------------------------
    let end = dir_bytes(&store);
    line(
        json!({"phase": "storage", "storage_bytes": end.0, "storage_apparent_bytes": end.1,
        "storage_files": end.2, "after_ingest_bytes": after_ingest.0,
        "after_updates_bytes": after_updates.0,
        "bytes_per_update_tick": round(bytes_per_tick, 0),
        "storage_size": storage.size_bytes().await?}),
    );
    line(
        json!({"phase": "summary", "n": n, "ticks": ticks, "ingest_s": round(ingest_s, 4),
        "updates_s": round(updates_s, 4), "time_travel_early_median_s": round(medians[0], 6),
        "time_travel_last_median_s": round(medians[1], 6), "fork_s": round(fork_s, 5),
        "storage_bytes": end.0, "ok": all_ok && state_ok && hist_ok}),
    );
    drop(world);
    Ok(Ours {
        ingest_s,
        updates_s,
        tt_early_s: medians[0],
        tt_last_s: medians[1],
        fork_s,
        fork_in_place_s: in_place_s,
        fork_writer_s: writer_s,
        fork_copy_s: copy_s,
        bytes_per_update_tick: bytes_per_tick,
        bytes_after_ingest: after_ingest.0,
    })
}
