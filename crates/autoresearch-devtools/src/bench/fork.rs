//! `cargo xtask bench fork [--quick] [--n 10000] [--reps 15]`: how long a
//! fork of a world of N runs plus its first tick takes
//! ([`World::commit_as_fork`], one durable write), set against what a
//! durable write costs on the same disk in the same run: a one-change
//! [`World::commit`] on the source world, and redb's own empty and
//! one-insert durable commits on a file beside the ledger. The difference
//! is what forking adds to a write. It also times [`World::open`] of the
//! source and its first and second ticks after the open.
//!
//! Every figure is the median of `--reps` repetitions (min and max too),
//! with the ledger writer thread's mean time per write (`writer`: applying
//! it in the transaction and redb's commit, page writes and fsync);
//! each fork starts from the source's head, reopened untimed, as the
//! `parity` benchmark's `fork` phase does.

use super::emit;
use anyhow::{Context, Result, bail, ensure};
use autoresearch_core::{ComponentRegistry, EntityId, Run, Storage, TickWriter, World};
use autoresearch_store::{CommitStats, RedbConfig, RedbStorage};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Instant;

struct Options {
    n: usize,
    reps: usize,
}

fn options(quick: bool, args: &[String]) -> Result<Options> {
    let mut o = Options {
        n: if quick { 1_000 } else { 10_000 },
        reps: if quick { 5 } else { 15 },
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let target = match a.as_str() {
            "--n" => &mut o.n,
            "--reps" => &mut o.reps,
            other => bail!("benchmark fork: unknown option {other:?} (expected --n N, --reps K)"),
        };
        let v = it.next().with_context(|| format!("{a} needs a number"))?;
        *target = v
            .replace('_', "")
            .parse()
            .ok()
            .filter(|x| *x > 0)
            .with_context(|| format!("{a} {v:?} is not a positive integer"))?;
    }
    Ok(o)
}

/// Median, min and max of `v` in milliseconds, as JSON.
fn stats_ms(v: &mut [f64]) -> Value {
    v.sort_by(f64::total_cmp);
    let ms = |s: f64| (s * 1e6).round() / 1e3;
    json!({"median_ms": ms(v[v.len() / 2]), "min_ms": ms(v[0]), "max_ms": ms(v[v.len() - 1])})
}

fn run_of(i: usize) -> Run {
    let exp = ["nanogpt-speedrun", "kernel-tune", "sat-solver"][i % 3];
    Run {
        run_id: format!(
            "{:016x}-{i:07}",
            (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ),
        experiment_name: exp.to_string(),
        vm_name: format!("vm-{exp}-{i:07}"),
        status: "running".to_string(),
        harness: "claude-code".to_string(),
        repo_url: format!("https://github.com/example/{exp}.git"),
        branch: format!("auto/{exp}/{}", i % 97),
        task: "optimize the training loop, add tests and profile memory usage".to_string(),
        started_at_ms: 1_767_225_600_000 + 37_000 * i as i64,
        finished_at_ms: 0,
        agent_name: format!("{exp}-claude-code"),
        workspace_path: format!("/var/lib/archetype-runner/workspaces/{i:07}"),
        commit_hash: String::new(),
    }
}

/// Runs the benchmark.
pub fn run(quick: bool, args: &[String]) -> Result<()> {
    let o = options(quick, args)?;
    let dir = tempfile::Builder::new()
        .prefix("bench-fork")
        .tempdir_in(std::env::temp_dir())
        .context("creating the benchmark directory")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(measure(dir.path(), &o))?;
    // redb's own durable commits, on a file beside the ledger.
    let (empty, one) = redb_commits(&dir.path().join("probe.redb"), o.reps)?;
    emit(json!({"bench": "fork", "step": "redb durable commit",
        "empty": empty, "one_insert": one, "reps": o.reps}));
    Ok(())
}

/// redb's empty and one-insert durable commits, `reps` each, in the
/// ledger's concurrency mode.
fn redb_commits(path: &std::path::Path, reps: usize) -> Result<(Value, Value)> {
    const T: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("probe");
    // In the ledger's multi-process mode (`Sharing::MultiProcess`), so that
    // each commit is the same kind of durable commit as the ledger's.
    let db = redb::Database::builder()
        .set_concurrency_mode(redb::ConcurrencyMode::MultiWriter)
        .create(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let (mut empty, mut one) = (Vec::new(), Vec::new());
    let value = [0x5au8; 512];
    for i in 0..reps as u64 {
        let t = Instant::now();
        db.begin_write()?.commit()?;
        empty.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let txn = db.begin_write()?;
        txn.open_table(T)?.insert(i, value.as_slice())?;
        txn.commit()?;
        one.push(t.elapsed().as_secs_f64());
    }
    Ok((stats_ms(&mut empty), stats_ms(&mut one)))
}

async fn measure(dir: &std::path::Path, o: &Options) -> Result<()> {
    let redb = Arc::new(RedbStorage::open(
        &dir.join("ledger.redb"),
        RedbConfig::default(),
    )?);
    let storage: Arc<dyn Storage> = redb.clone();
    // The writer thread's time inside each measured write: applying it in
    // the transaction, and redb's commit; the rest of a write's wall time
    // is the caller's side and the hand-offs.
    let mut split = Split::default();
    let registry = Arc::new(ComponentRegistry::standard());
    // The source: N runs spawned in one tick (as an ingest writes them).
    let t = Instant::now();
    let mut writer =
        TickWriter::create_on_commit(storage.clone(), registry.clone(), "bench-fork-source");
    writer.reserve(2 * o.n);
    for i in 0..o.n {
        let e = writer.spawn();
        writer.set(e, &run_of(i))?;
    }
    writer.commit().await?;
    let source = writer.info().id;
    let write_s = t.elapsed().as_secs_f64();

    // Open, then the first and second one-change ticks after it.
    let e = EntityId(0);
    let t = Instant::now();
    let mut world = World::open_id(storage.clone(), registry.clone(), source).await?;
    let open_s = t.elapsed().as_secs_f64();
    ensure!(world.len() == o.n, "the source holds {} runs", world.len());
    let mut ticks = Vec::new();
    for status in ["stopping", "stopped"] {
        let t = Instant::now();
        let mut run: Run = world.get(e).context("run 0 is gone")?;
        run.status = status.to_string();
        world.insert_owned(e, run)?;
        world.commit().await?;
        ticks.push(t.elapsed().as_secs_f64());
    }
    emit(json!({"bench": "fork", "step": "source", "n": o.n,
        "write_s": (write_s * 1e4).round() / 1e4, "open_ms": (open_s * 1e6).round() / 1e3,
        "first_tick_ms": (ticks[0] * 1e6).round() / 1e3,
        "second_tick_ms": (ticks[1] * 1e6).round() / 1e3}));

    // One-change durable commits on the source: the write a fork adds to.
    let mut commits = Vec::new();
    for r in 0..o.reps {
        let mut run: Run = world.get(e).context("run 0 is gone")?;
        run.status = format!("s{r}");
        let (t, before) = (Instant::now(), redb.commit_stats());
        world.insert_owned(e, run)?;
        world.commit().await?;
        commits.push(t.elapsed().as_secs_f64());
        split.add("commit_one_change", &before, &redb.commit_stats());
    }
    let head = world.tick();
    drop(world);

    // A fork of the head plus its first tick, each from the source reopened.
    let (mut forks, mut in_place) = (Vec::new(), Vec::new());
    for r in 0..o.reps {
        let mut world = World::open_id(storage.clone(), registry.clone(), source).await?;
        let mut run: Run = world.get(e).context("run 0 is gone")?;
        run.status = "forked".to_string();
        let (t, before) = (Instant::now(), redb.commit_stats());
        world.insert_owned(e, run.clone())?;
        let info = world.commit_as_fork(&format!("bench-fork-{r}")).await?;
        forks.push(t.elapsed().as_secs_f64());
        split.add("commit_as_fork", &before, &redb.commit_stats());
        ensure!(
            info.head == head.next() && world.get::<Run>(e) == Some(run.clone()),
            "fork {r} is not at the expected head with its change"
        );
        // fork_in_place then commit: two durable writes.
        let t = Instant::now();
        world
            .fork_in_place(&format!("bench-fork-in-place-{r}"))
            .await?;
        run.status = "forked-again".to_string();
        world.insert_owned(e, run)?;
        world.commit().await?;
        in_place.push(t.elapsed().as_secs_f64());
    }
    let fork_med = {
        let mut v = forks.clone();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let commit_med = {
        let mut v = commits.clone();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    emit(
        json!({"bench": "fork", "step": "fork", "n": o.n, "reps": o.reps,
        "commit_as_fork": stats_ms(&mut forks),
        "fork_in_place_then_commit": stats_ms(&mut in_place),
        "commit_one_change": stats_ms(&mut commits),
        "fork_over_commit_ms": ((fork_med - commit_med) * 1e6).round() / 1e3,
        "writer": split.json()}),
    );
    Ok(())
}

/// The writer thread's apply and commit time per measured write, by kind
/// of write (means over the repetitions, ms).
#[derive(Default)]
struct Split(std::collections::BTreeMap<&'static str, (u64, u64, u64)>);

impl Split {
    fn add(&mut self, kind: &'static str, before: &CommitStats, after: &CommitStats) {
        let e = self.0.entry(kind).or_default();
        e.0 += 1;
        e.1 += after.apply_ns - before.apply_ns;
        e.2 += after.commit_ns - before.commit_ns;
    }

    fn json(&self) -> Value {
        let ms = |ns: u64, n: u64| (ns as f64 / n.max(1) as f64 / 1e3).round() / 1e3;
        self.0
            .iter()
            .map(|(k, (n, apply, commit))| {
                (
                    k.to_string(),
                    json!({"apply_ms": ms(*apply, *n), "commit_ms": ms(*commit, *n)}),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}
