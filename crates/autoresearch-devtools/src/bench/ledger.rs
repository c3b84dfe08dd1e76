//! `cargo xtask bench ledger [--quick] [--only SECTIONS] [--histories LIST]
//! [--tt-entities N] [--tt-samples N] [--in-flight K]`: the redb ledger's append rate (one
//! world, then eight at once, every tick durable), the store's own cost per
//! change (non-durable raw appends: what the append check costs), time
//! travel, fork, and storage cost against the Python engine's full-state
//! layout.
//!
//! `--only` runs some sections (`append`, `append_raw`, `time_travel`,
//! `storage`, comma-separated); `--histories` sets the history lengths of
//! the time-travel section (for example `1000,1000000`: whether a read's
//! cost grows with history), `--tt-entities` its live entities and
//! `--tt-samples` the random past ticks it reads per kind of read (300; 40
//! with `--quick`; more to profile the reads).
//! `--in-flight K` (default 1) lets each appender have K ticks in flight:
//! it stages ticks ([`World::stage`]) and flushes them K at a time, so a
//! tick is durable once its group is flushed, not when it is made (the
//! `ticks_in_flight` field of the `append` lines says which was measured).
//! `--writers LIST` sets the appenders of the append runs (default `1,8`);
//! each `append` line gives the ledger writer thread's time per tick,
//! applying the ticks (`writer_apply_us_per_tick`) and in redb's commit
//! (`writer_commit_us_per_tick`).
//!
//! Every figure comes from a fresh ledger in a temp dir on the same disk, with
//! the default `RedbConfig` (durable, multi-process), through the public
//! `World` API a user calls. The raw fsync rate of the disk is measured in
//! the same run, because a durable commit cannot beat it.

use super::emit;
use anyhow::{Context, Result};
use autoresearch_core::{
    ComponentRegistry, EntityId, Run, RunStatus, Storage, Tick, World, ledger,
};
use autoresearch_store::{RedbConfig, RedbStorage, Sharing};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Workload sizes; `quick` shrinks every one of them.
struct Sizes {
    /// Run entities per world in the append bench.
    entities: u64,
    /// Timed ticks per world in the append bench.
    ticks: u64,
    /// Live entities of the time-travel worlds.
    tt_entities: u64,
    /// History lengths of the time-travel and fork benches.
    histories: Vec<u64>,
    /// Random past ticks read per history.
    tt_samples: usize,
    /// Entities and ticks of the storage comparison.
    storage_entities: u64,
    storage_ticks: u64,
    fsync_time: Duration,
    /// Ticks each appender stages before it flushes them (1: every tick
    /// committed durably on its own).
    in_flight: u64,
    /// Appenders of the append bench, one run each (default 1 and 8).
    writers: Vec<u64>,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                entities: 2_000,
                ticks: 100,
                tt_entities: 200,
                histories: vec![1_000, 10_000],
                tt_samples: 40,
                storage_entities: 200,
                storage_ticks: 200,
                fsync_time: Duration::from_millis(30),
                in_flight: 1,
                writers: vec![1, 8],
            }
        } else {
            Sizes {
                entities: 10_000,
                ticks: 1_000,
                tt_entities: 1_000,
                histories: vec![10_000, 100_000],
                tt_samples: 300,
                storage_entities: 1_000,
                storage_ticks: 1_000,
                fsync_time: Duration::from_millis(200),
                in_flight: 1,
                writers: vec![1, 8],
            }
        }
    }
}

/// A small deterministic generator (splitmix64): the workload is the same
/// on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Sections of the benchmark, in the order they run.
const SECTIONS: [&str; 4] = ["append", "append_raw", "time_travel", "storage"];

pub fn run(quick: bool, args: &[String]) -> Result<()> {
    let mut sizes = Sizes::new(quick);
    let mut only: Vec<String> = SECTIONS.iter().map(|s| s.to_string()).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .with_context(|| format!("bench ledger: {flag} needs a value"))?;
        let numbers = || -> Result<Vec<u64>> {
            value
                .split(',')
                .map(|s| {
                    s.trim()
                        .replace('_', "")
                        .parse::<u64>()
                        .ok()
                        .filter(|n| *n > 0)
                        .with_context(|| {
                            format!(
                                "bench ledger: {flag} {value:?}: not a list of positive integers"
                            )
                        })
                })
                .collect()
        };
        match flag.as_str() {
            "--histories" => sizes.histories = numbers()?,
            "--tt-entities" => sizes.tt_entities = numbers()?[0],
            "--tt-samples" => sizes.tt_samples = numbers()?[0] as usize,
            "--in-flight" => sizes.in_flight = numbers()?[0],
            "--writers" => sizes.writers = numbers()?,
            "--only" => {
                only = value.split(',').map(|s| s.trim().to_string()).collect();
                if let Some(bad) = only.iter().find(|s| !SECTIONS.contains(&s.as_str())) {
                    anyhow::bail!("bench ledger: --only {bad:?}: expected one of {SECTIONS:?}");
                }
            }
            other => anyhow::bail!(
                "bench ledger: unknown option {other:?} (expected --only, --histories, --tt-entities, --tt-samples, --in-flight, --writers)"
            ),
        }
    }
    let runs = |s: &str| only.iter().any(|o| o == s);
    let dir = tempfile::Builder::new()
        .prefix("bench-ledger")
        .tempdir_in(std::env::temp_dir())
        .context("creating the benchmark directory")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(async {
        if runs("append") {
            for &writers in &sizes.writers {
                append(dir.path(), &sizes, writers as usize).await?;
            }
        }
        if runs("append_raw") {
            for changes in [10, 1_000] {
                append_raw(dir.path(), &sizes, changes).await?;
            }
        }
        if runs("time_travel") {
            for &history in &sizes.histories {
                time_travel_and_fork(dir.path(), &sizes, history).await?;
            }
        }
        if runs("storage") {
            storage(dir.path(), &sizes).await?;
        }
        Ok(())
    })
}

/// Rate of 4 KiB write + fdatasync (the call redb makes) on the bench disk,
/// accumulated over several short runs; alongside it, the rate of bare redb
/// commits (one small insert each) in the ledger's multi-process mode, the
/// ceiling any durable ledger append on this disk can reach.
#[derive(Default)]
struct Probe {
    syncs: u64,
    secs: f64,
    commits: u64,
    commit_secs: f64,
}

impl Probe {
    fn run(&mut self, dir: &Path, time: Duration) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let path = dir.join("fsync-probe");
        let file =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let block = [0x5au8; 4096];
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < time {
            file.write_all_at(&block, (n % 16) * 4096)
                .and_then(|_| file.sync_data())
                .with_context(|| format!("writing {}", path.display()))?;
            n += 1;
        }
        self.syncs += n;
        self.secs += start.elapsed().as_secs_f64();
        self.run_redb(dir, time)
    }

    fn run_redb(&mut self, dir: &Path, time: Duration) -> Result<()> {
        const T: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("probe");
        let path = dir.join("commit-probe.redb");
        let db = redb::Database::builder()
            .set_concurrency_mode(redb::ConcurrencyMode::MultiWriter)
            .create(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let value = [0x5au8; 1024];
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < time {
            let txn = db.begin_write()?;
            txn.open_table(T)?.insert(n, value.as_slice())?;
            txn.commit()?;
            n += 1;
        }
        self.commits += n;
        self.commit_secs += start.elapsed().as_secs_f64();
        Ok(())
    }

    fn rate(&self) -> f64 {
        self.syncs as f64 / self.secs.max(1e-9)
    }

    fn commit_rate(&self) -> f64 {
        self.commits as f64 / self.commit_secs.max(1e-9)
    }
}

fn registry() -> Arc<ComponentRegistry> {
    Arc::new(ComponentRegistry::standard())
}

fn open(path: &Path, config: RedbConfig) -> Result<Arc<dyn Storage>> {
    let st =
        RedbStorage::open(path, config).with_context(|| format!("opening {}", path.display()))?;
    Ok(Arc::new(st))
}

/// A world holding `n` runs, spawned in one tick.
async fn world_of_runs(st: Arc<dyn Storage>, name: &str, n: u64) -> Result<(World, Vec<EntityId>)> {
    let mut w = World::create(st, registry(), name).await?;
    let mut ids = Vec::with_capacity(n as usize);
    for i in 0..n {
        let mut run = Run::new(format!("run-{i:06}"), name);
        run.harness = "claude-code".into();
        run.vm_name = format!("vm-{}", i % 64);
        run.task = "improve val_bpb".into();
        ids.push(w.spawn_with(&run)?);
    }
    w.commit().await?;
    Ok((w, ids))
}

/// One tick changing the status of `changes` random runs.
async fn status_tick(w: &mut World, ids: &[EntityId], changes: u64, rng: &mut Rng) -> Result<()> {
    change_statuses(w, ids, changes, rng)?;
    w.commit().await?;
    Ok(())
}

/// Buffers status changes of `changes` random runs, each changed in place
/// with [`World::modify`] (no copy of the run out of the world and back,
/// as [`World::get`] then [`World::insert_owned`] would make).
fn change_statuses(w: &mut World, ids: &[EntityId], changes: u64, rng: &mut Rng) -> Result<()> {
    for _ in 0..changes {
        let e = ids[rng.below(ids.len() as u64) as usize];
        let next = RunStatus::ALL[rng.below(RunStatus::ALL.len() as u64) as usize];
        w.modify(e, |run: &mut Run| run.set_status(next))
            .context("changing the status of a run of the workload")?;
    }
    Ok(())
}

async fn append(dir: &Path, sizes: &Sizes, writers: usize) -> Result<()> {
    let path = dir.join(format!("append-{writers}.redb"));
    let redb = Arc::new(
        RedbStorage::open(&path, RedbConfig::default())
            .with_context(|| format!("opening {}", path.display()))?,
    );
    let st: Arc<dyn Storage> = redb.clone();
    let per_tick = (sizes.entities / 100).max(1);
    let mut worlds = Vec::new();
    for i in 0..writers {
        worlds.push(world_of_runs(st.clone(), &format!("exp-{i}"), sizes.entities).await?);
    }
    eprintln!(
        "append: {writers} writer(s), {} runs each, timing {} ticks each",
        sizes.entities, sizes.ticks
    );
    let ticks = sizes.ticks;
    let in_flight = sizes.in_flight;
    // The disk's rate drifts with other load on the machine, so the timed
    // appends run in slices with a short fsync probe before each and after
    // the last; fsync_per_s is the probes' overall rate, and the probes are
    // not counted in the append time.
    const SLICES: u64 = 10;
    let mut probe = Probe::default();
    probe.run(dir, sizes.fsync_time)?;
    let mut secs = 0.0;
    let mut worlds = worlds;
    let before = redb.commit_stats();
    let mut rngs: Vec<Rng> = (0..writers).map(|i| Rng(i as u64 + 1)).collect();
    for slice in 0..SLICES {
        let n = ticks * (slice + 1) / SLICES - ticks * slice / SLICES;
        let start = Instant::now();
        let tasks: Vec<_> = worlds
            .into_iter()
            .zip(rngs)
            .map(|((mut w, ids), mut rng)| {
                tokio::spawn(async move {
                    if in_flight <= 1 {
                        for _ in 0..n {
                            status_tick(&mut w, &ids, per_tick, &mut rng).await?;
                        }
                    } else {
                        for _ in 0..n {
                            change_statuses(&mut w, &ids, per_tick, &mut rng)?;
                            w.stage()?;
                            if w.staged() as u64 >= in_flight {
                                w.flush().await?;
                            }
                        }
                        w.flush().await?;
                    }
                    anyhow::Ok(((w, ids), rng))
                })
            })
            .collect();
        worlds = Vec::new();
        rngs = Vec::new();
        for t in tasks {
            let (w, rng) = t.await.context("an appender task panicked")??;
            worlds.push(w);
            rngs.push(rng);
        }
        secs += start.elapsed().as_secs_f64();
        probe.run(dir, sizes.fsync_time)?;
    }
    let fsync = probe.rate();
    let after = redb.commit_stats();
    let commits = after.transactions - before.transactions;
    let total_ticks = (writers as u64 * ticks) as f64;
    // The writer thread's time per tick: applying the ticks in its
    // transactions, and redb's commit (page writes and fsync).
    let per_tick_us = |ns: u64| round(ns as f64 / 1e3 / total_ticks * 10.0) / 10.0;
    emit(json!({
        "bench": "append",
        "writers": writers,
        "entities": sizes.entities,
        "ticks": ticks,
        "changes_per_tick": per_tick,
        "ticks_in_flight": in_flight,
        "ticks_per_s": round(total_ticks / secs),
        "changes_per_s": round(total_ticks * per_tick as f64 / secs),
        "fsync_per_s": round(fsync),
        "ticks_per_fsync": round(total_ticks / secs / fsync * 100.0) / 100.0,
        "redb_commits_per_s": round(probe.commit_rate()),
        "ledger_commits": commits,
        "ticks_per_commit": round(total_ticks / commits.max(1) as f64 * 100.0) / 100.0,
        "writer_apply_us_per_tick": per_tick_us(after.apply_ns - before.apply_ns),
        "writer_commit_us_per_tick": per_tick_us(after.commit_ns - before.commit_ns),
    }));
    Ok(())
}

/// The store's own cost per change, without fsync or the `World`: ticks of
/// `changes` sets of a small component on random live entities (of
/// `sizes.entities`), encoded once, appended through `Storage::append`
/// to a non-durable exclusive ledger. Every change is checked against the
/// head's liveness before it is stored, so this is where the check shows.
async fn append_raw(dir: &Path, sizes: &Sizes, changes: u64) -> Result<()> {
    use autoresearch_core::{Change, TickRecord};
    let path = dir.join(format!("append-raw-{changes}.redb"));
    let config = RedbConfig {
        sharing: Sharing::Exclusive,
        durable: false,
        snapshot_interval: None,
        ..RedbConfig::default()
    };
    let st = open(&path, config)?;
    let world = st.create_world("raw").await?.id;
    let spawn = (0..sizes.entities)
        .map(|e| Change::Spawn {
            entity: EntityId(e),
        })
        .collect();
    st.append(
        world,
        TickRecord {
            tick: Tick(1),
            at_ms: 1,
            changes: spawn,
        },
        None,
    )
    .await?;
    let ticks = (sizes.ticks * 2_000 / changes).clamp(50, 20_000);
    let mut rng = Rng(7);
    let records: Vec<TickRecord> = (0..ticks)
        .map(|t| TickRecord {
            tick: Tick(t + 2),
            at_ms: 1,
            changes: (0..changes)
                .map(|_| Change::Set {
                    entity: EntityId(rng.below(sizes.entities)),
                    component: "Status".into(),
                    value: vec![rng.below(5) as u8],
                })
                .collect(),
        })
        .collect();
    eprintln!("append_raw: {ticks} ticks of {changes} changes, non-durable");
    let start = Instant::now();
    for r in records {
        st.append(world, r, None).await?;
    }
    let secs = start.elapsed().as_secs_f64();
    emit(json!({
        "bench": "append_raw",
        "durable": false,
        "entities": sizes.entities,
        "ticks": ticks,
        "changes_per_tick": changes,
        "ticks_per_s": round(ticks as f64 / secs),
        "changes_per_s": round((ticks * changes) as f64 / secs),
        "ns_per_change": round(secs * 1e9 / (ticks * changes) as f64),
    }));
    Ok(())
}

/// Builds a history of `history` ticks (1% of `tt_entities` changed per
/// tick) with fast non-durable commits, then times random past reads and
/// forks on the default, durable configuration.
async fn time_travel_and_fork(dir: &Path, sizes: &Sizes, history: u64) -> Result<()> {
    let path = dir.join(format!("history-{history}.redb"));
    let bulk = RedbConfig {
        sharing: Sharing::Exclusive,
        durable: false,
        ..RedbConfig::default()
    };
    let per_tick = (sizes.tt_entities / 100).max(1);
    let gen_start = Instant::now();
    let id = {
        let st = open(&path, bulk)?;
        let (mut w, ids) = world_of_runs(st, "history", sizes.tt_entities).await?;
        let mut rng = Rng(history);
        // Staged ticks, appended 256 at a time: one commit each.
        while w.tick().0 < history {
            change_statuses(&mut w, &ids, per_tick, &mut rng)?;
            w.stage()?;
            if w.staged() >= 256 {
                w.flush().await?;
            }
        }
        w.flush().await?;
        w.id()
    };
    eprintln!(
        "time travel: generated {history} ticks in {:.1}s",
        gen_start.elapsed().as_secs_f64()
    );
    let reg = registry();
    // The runs read with nothing kept decoded between reads (every read
    // decompresses and decodes its snapshot and records), first, on a
    // handle of its own.
    let mut uncached_times = Vec::with_capacity(sizes.tt_samples);
    {
        let st = open(
            &path,
            RedbConfig {
                decoded_cache_bytes: 0,
                ..RedbConfig::default()
            },
        )?;
        let mut rng = Rng(11);
        for _ in 0..sizes.tt_samples {
            let tick = Tick(1 + rng.below(history));
            let start = Instant::now();
            let runs = ledger::component_values_at::<Run>(st.as_ref(), &reg, id, tick).await?;
            uncached_times.push(start.elapsed());
            anyhow::ensure!(
                runs.len() as u64 == sizes.tt_entities,
                "time travel lost runs"
            );
        }
    }
    let st = open(&path, RedbConfig::default())?;
    let mut rng = Rng(7);
    let mut times = Vec::with_capacity(sizes.tt_samples);
    for _ in 0..sizes.tt_samples {
        let tick = Tick(1 + rng.below(history));
        let start = Instant::now();
        let w = World::open_at(st.clone(), reg.clone(), id, tick).await?;
        times.push(start.elapsed());
        anyhow::ensure!(
            w.len() as u64 == sizes.tt_entities,
            "time travel lost entities"
        );
    }
    let mut state_times = Vec::with_capacity(sizes.tt_samples);
    for _ in 0..sizes.tt_samples {
        let tick = Tick(1 + rng.below(history));
        let start = Instant::now();
        ledger::state_at(st.as_ref(), id, tick).await?;
        state_times.push(start.elapsed());
    }
    // The runs at a past tick, without a hecs world (the query the
    // Python reference's time travel answers).
    let mut run_times = Vec::with_capacity(sizes.tt_samples);
    for _ in 0..sizes.tt_samples {
        let tick = Tick(1 + rng.below(history));
        let start = Instant::now();
        let runs = ledger::component_values_at::<Run>(st.as_ref(), &reg, id, tick).await?;
        run_times.push(start.elapsed());
        anyhow::ensure!(
            runs.len() as u64 == sizes.tt_entities,
            "time travel lost runs"
        );
    }
    let file_bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    emit(json!({
        "bench": "time_travel",
        "history_ticks": history,
        "entities": sizes.tt_entities,
        "snapshot_interval": st.snapshot_interval(),
        "p50_us": percentile_us(&mut times, 0.50),
        "p99_us": percentile_us(&mut times, 0.99),
        "state_only_p50_us": percentile_us(&mut state_times, 0.50),
        "runs_p50_us": percentile_us(&mut run_times, 0.50),
        "runs_p99_us": percentile_us(&mut run_times, 0.99),
        "runs_uncached_p50_us": percentile_us(&mut uncached_times, 0.50),
        "runs_uncached_p99_us": percentile_us(&mut uncached_times, 0.99),
        "file_bytes": file_bytes,
        "reads": "World::open_at at a random past tick (state_only: ledger::state_at; runs: ledger::component_values_at::<Run>; runs_uncached: the same with RedbConfig::decoded_cache_bytes 0)",
    }));
    // A fork is one durable commit, so its cost is a couple of fsyncs; the
    // disk's rate is probed around the forks to put the figure in context.
    let mut probe = Probe::default();
    probe.run(dir, sizes.fsync_time)?;
    let mut fork_times = Vec::new();
    for i in 0..20 {
        let tick = Tick(1 + rng.below(history));
        let start = Instant::now();
        st.fork_world(id, tick, &format!("fork-{i}")).await?;
        fork_times.push(start.elapsed());
    }
    probe.run(dir, sizes.fsync_time)?;
    let us = percentile_us(&mut fork_times, 0.50);
    emit(json!({
        "bench": "fork",
        "history_ticks": history,
        "us": us,
        "p99_us": percentile_us(&mut fork_times, 0.99),
        "durable": true,
        "fsync_per_s": round(probe.rate()),
        "fsyncs_per_fork": round(us as f64 * probe.rate() / 1e6),
    }));
    // Long histories take hundreds of MB: freed before the next section.
    drop(st);
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    Ok(())
}

/// Ledger bytes per change against the Python engine's layout, in which
/// every tick stores every live entity's full row.
async fn storage(dir: &Path, sizes: &Sizes) -> Result<()> {
    let path = dir.join("storage.redb");
    let st = RedbStorage::open(&path, RedbConfig::default())
        .with_context(|| format!("opening {}", path.display()))?;
    let st = Arc::new(st);
    let dyn_st: Arc<dyn Storage> = st.clone();
    let (mut w, ids) = world_of_runs(dyn_st.clone(), "storage", sizes.storage_entities).await?;
    let per_tick = (sizes.storage_entities / 100).max(1);
    let mut rng = Rng(99);
    while w.tick().0 < sizes.storage_ticks {
        status_tick(&mut w, &ids, per_tick, &mut rng).await?;
    }
    let (id, head) = (w.id(), w.tick());
    let records = ledger::read_records(dyn_st.as_ref(), id, Tick(1), head).await?;
    let changes: u64 = records.iter().map(|r| r.changes.len() as u64).sum();
    let ledger_bytes: u64 = st.table_bytes().await?.iter().map(|t| t.total()).sum();
    drop(w);
    drop(dyn_st);
    drop(st);
    let full_bytes = write_full_state(&path, &records)?;
    emit(json!({
        "bench": "storage",
        "entities": sizes.storage_entities,
        "ticks": head.0,
        "changes": changes,
        "bytes_per_change": round(ledger_bytes as f64 / changes as f64),
        "full_state_bytes_per_change": round(full_bytes as f64 / changes as f64),
    }));
    Ok(())
}

/// Writes the full-state layout of `records` into a table of its own in the
/// ledger file and returns the bytes that table occupies.
fn write_full_state(path: &Path, records: &[autoresearch_core::TickRecord]) -> Result<u64> {
    use redb::{ReadableDatabase, ReadableTableMetadata, TableDefinition};
    const FULL: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("bench_full_state");
    let db = redb::Database::builder()
        .set_concurrency_mode(redb::ConcurrencyMode::MultiWriter)
        .create(path)
        .with_context(|| format!("opening {} with redb", path.display()))?;
    let mut state = autoresearch_core::State::empty();
    for chunk in records.chunks(100) {
        let txn = db.begin_write()?;
        {
            let mut table = txn.open_table(FULL)?;
            for rec in chunk {
                state.apply(autoresearch_core::WorldId(0), rec)?;
                for (e, comps) in &state.entities {
                    let row: Vec<(&String, &Vec<u8>)> = comps.iter().collect();
                    let bytes = postcard::to_stdvec(&row)?;
                    table.insert((rec.tick.0, e.0), bytes.as_slice())?;
                }
            }
        }
        txn.commit()?;
    }
    let txn = db.begin_read()?;
    let stats = txn.open_table(FULL)?.stats()?;
    Ok(stats.stored_bytes() + stats.metadata_bytes() + stats.fragmented_bytes())
}

fn percentile_us(times: &mut [Duration], q: f64) -> u64 {
    times.sort_unstable();
    let i = ((times.len() as f64 - 1.0) * q).round() as usize;
    times.get(i).map_or(0, |d| d.as_micros() as u64)
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
