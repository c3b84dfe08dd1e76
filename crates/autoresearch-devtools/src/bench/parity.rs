//! `cargo xtask bench parity [--quick] [--n 2000,10000] [--ticks 50]
//! [--update-frac 0.01] [--seed 42] [--tt-reps 5]`: the Python reference's
//! own workload (`bench.py` of the archetype-py anchor: archetype-ecs 0.2.0
//! on LanceDB) through this workspace's public API, one JSON line per phase
//! with the phase names of `bench.py` (`make_db`, `setup`, `ingest`,
//! `updates`, `time_travel`, `fork`, `storage`, `summary`).
//!
//! The workload, per (N, T):
//! - `make_db`: a runner `state.db` (`agents` table, N rows) of the shape
//!   `bench.py` writes (ISO timestamps with `+00:00`, `finished_at` NULL
//!   unless stopped or crashed, strictly increasing `started_at`);
//! - `ingest`: [`RunnerIngest::sync`] into a fresh durable [`RedbStorage`];
//! - `updates`: T ticks; each picks `round(N * update_frac)` distinct runs
//!   (seeded), moves each one's status to the next of
//!   booting→running→stopping→stopped→crashed→booting with
//!   [`World::get`]/[`World::insert_owned`], then [`World::commit`]s (durable);
//! - `time_travel`: every run at the first update tick and at the last
//!   tick ([`ledger::component_values_at`], no hecs world, no value
//!   copied, each decoded as a borrowed [`RunRef`]: the table `.to_arrow()` builds), median of
//!   `--tt-reps`, checked against the expected statuses; `state_at_median_s`
//!   is the type-agnostic state alone;
//! - `fork`: a fork at the head plus one tick on it, four ways, each
//!   checked (the fork's head holds the source's last state plus its own
//!   change; its view of the early tick, through lineage, the source's):
//!   [`World::commit_as_fork`] (the fork and its tick in one durable
//!   commit; `wall_s`), [`World::fork_in_place`] then [`World::commit`]
//!   (`in_place_wall_s`),
//!   [`World::fork_world`] (a second `World`, the state copied;
//!   `copy_wall_s`) and a [`TickWriter::fork_on_commit`] (the fork made
//!   with the writer's first tick; `tick_writer_wall_s`);
//! - `storage`: du-style bytes (`st_blocks * 512`) of the ledger directory
//!   after ingest, after the updates and at the end.
//!
//! With `ANCHOR_PYTHON` set to a Python that has the reference installed
//! (`setup.sh` of the anchor), `bench.py` (`ANCHOR_BENCH`, default
//! `../shared/anchors/archetype-py/bench.py` beside the workspace) runs first
//! on the same N, T, seed and update fraction, its `state.db` becomes this
//! run's input, its lines are printed with `"engine": "archetype-ecs"`, and
//! one `ratio` line per phase compares the two (reference / ours for times,
//! so larger is better; reference bytes / ours for storage).

use super::emit;
use anyhow::{Context, Result, bail, ensure};
use autoresearch_core::{
    ComponentRegistry, EntityId, Run, RunRef, Storage, Tick, TickWriter, World, ledger,
};
use autoresearch_runner::{RunnerConfig, RunnerIngest};
use autoresearch_store::{RedbConfig, RedbStorage};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// The options of one invocation.
struct Options {
    sizes: Vec<usize>,
    ticks: Vec<usize>,
    update_frac: f64,
    seed: u64,
    tt_reps: usize,
}

impl Options {
    fn parse(quick: bool, args: &[String]) -> Result<Options> {
        let mut o = Options {
            sizes: if quick {
                vec![500]
            } else {
                vec![2_000, 10_000]
            },
            ticks: if quick { vec![10] } else { vec![50] },
            update_frac: 0.01,
            seed: 42,
            tt_reps: 5,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let value = it
                .next()
                .with_context(|| format!("bench parity: {flag} needs a value"))?;
            let list = |v: &str| -> Result<Vec<usize>> {
                v.split(',')
                    .map(|s| {
                        s.trim()
                            .replace('_', "")
                            .parse::<usize>()
                            .ok()
                            .filter(|n| *n > 0)
                            .with_context(|| {
                                format!(
                                    "bench parity: {flag} {v:?}: not a list of positive integers"
                                )
                            })
                    })
                    .collect()
            };
            match flag.as_str() {
                "--n" => o.sizes = list(value)?,
                "--ticks" => o.ticks = list(value)?,
                "--update-frac" => {
                    o.update_frac = value
                        .parse()
                        .ok()
                        .filter(|f: &f64| *f > 0.0 && *f <= 1.0)
                        .with_context(|| {
                            format!("bench parity: --update-frac {value:?}: not in (0, 1]")
                        })?
                }
                "--seed" => {
                    o.seed = value
                        .parse()
                        .with_context(|| format!("bench parity: --seed {value:?}"))?
                }
                "--tt-reps" => {
                    o.tt_reps = list(value)?[0];
                }
                other => bail!(
                    "bench parity: unknown option {other:?} (expected --n, --ticks, --update-frac, --seed, --tt-reps)"
                ),
            }
        }
        Ok(o)
    }
}

/// The reference's Python and bench script, when `ANCHOR_PYTHON` is set.
struct Anchor {
    python: PathBuf,
    script: PathBuf,
}

impl Anchor {
    fn from_env() -> Result<Option<Anchor>> {
        let Some(python) = std::env::var_os("ANCHOR_PYTHON") else {
            return Ok(None);
        };
        let script = match std::env::var_os("ANCHOR_BENCH") {
            Some(s) => PathBuf::from(s),
            None => Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../shared/anchors/archetype-py/bench.py"),
        };
        ensure!(
            script.is_file(),
            "ANCHOR_PYTHON is set but the reference bench {} does not exist (set ANCHOR_BENCH)",
            script.display()
        );
        Ok(Some(Anchor {
            python: python.into(),
            script,
        }))
    }

    /// Runs `bench.py` in `work` (kept, so its state.db can be reused) and
    /// returns its lines by phase.
    fn run(
        &self,
        work: &Path,
        n: usize,
        ticks: usize,
        o: &Options,
    ) -> Result<HashMap<String, Value>> {
        eprintln!("parity: running the reference at N={n}, T={ticks} ...");
        let out = std::process::Command::new(&self.python)
            .arg(&self.script)
            .args(["--n", &n.to_string(), "--ticks", &ticks.to_string()])
            .args(["--seed", &o.seed.to_string()])
            .args(["--update-frac", &o.update_frac.to_string()])
            .args(["--tt-reps", &o.tt_reps.to_string()])
            .arg("--workdir")
            .arg(work)
            .arg("--keep")
            .stderr(std::process::Stdio::null())
            .output()
            .with_context(|| {
                format!(
                    "running {} {}",
                    self.python.display(),
                    self.script.display()
                )
            })?;
        let mut phases = HashMap::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Ok(mut v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let Some(phase) = v.get("phase").and_then(Value::as_str).map(str::to_string) else {
                continue;
            };
            if phase != "updates" {
                emit_as(&mut v, "archetype-ecs", n, ticks);
            } else {
                // The per-tick list is long; the summary fields stay.
                let mut short = v.clone();
                if let Some(m) = short.as_object_mut() {
                    m.remove("tick_ms_all");
                }
                emit_as(&mut short, "archetype-ecs", n, ticks);
            }
            phases.insert(phase, v);
        }
        ensure!(
            out.status.success() && phases.contains_key("summary"),
            "the reference bench failed ({}) at N={n}, T={ticks}",
            out.status
        );
        Ok(phases)
    }
}

fn emit_as(v: &mut Value, engine: &str, n: usize, ticks: usize) {
    if let Some(m) = v.as_object_mut() {
        m.insert("bench".into(), json!("parity"));
        m.insert("engine".into(), json!(engine));
        m.insert("n".into(), json!(n));
        m.insert("ticks".into(), json!(ticks));
    }
    emit(v.clone());
}

/// Runs the parity benchmark.
pub fn run(quick: bool, args: &[String]) -> Result<()> {
    let options = Options::parse(quick, args)?;
    let anchor = Anchor::from_env()?;
    if anchor.is_none() {
        eprintln!("parity: ANCHOR_PYTHON is not set; measuring this engine only");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    for &n in &options.sizes {
        for &ticks in &options.ticks {
            let dir = tempfile::Builder::new()
                .prefix("bench-parity")
                .tempdir_in(std::env::temp_dir())
                .context("creating the benchmark directory")?;
            let reference = match &anchor {
                Some(a) => {
                    let work = dir.path().join("anchor");
                    let phases = a.run(&work, n, ticks, &options)?;
                    // Its store is no longer needed; its state.db is our input.
                    let _ = std::fs::remove_dir_all(work.join("store"));
                    Some((phases, work.join("state.db")))
                }
                None => None,
            };
            let ours = rt.block_on(case(
                dir.path(),
                n,
                ticks,
                &options,
                reference.as_ref().map(|(_, db)| db.as_path()),
            ))?;
            if let Some((phases, _)) = &reference {
                ratios(phases, &ours, n, ticks);
            }
        }
    }
    Ok(())
}

/// The figures of our run the ratios need.
struct Ours {
    ingest_s: f64,
    updates_s: f64,
    tt_early_s: f64,
    tt_last_s: f64,
    fork_s: f64,
    fork_in_place_s: f64,
    fork_writer_s: f64,
    fork_copy_s: f64,
    bytes_per_update_tick: f64,
    bytes_after_ingest: u64,
}

fn ratios(reference: &HashMap<String, Value>, ours: &Ours, n: usize, ticks: usize) {
    let get = |phase: &str, path: &[&str]| -> Option<f64> {
        let mut v = reference.get(phase)?;
        for p in path {
            v = v.get(*p)?;
        }
        v.as_f64()
    };
    // (name, reference, ours, target, larger_is_better is implied: ratio = ref / ours)
    let rows: [(&str, Option<f64>, f64, f64); 10] = [
        ("ingest", get("ingest", &["wall_s"]), ours.ingest_s, 20.0),
        (
            "updates",
            get("updates", &["wall_s"]),
            ours.updates_s,
            100.0,
        ),
        (
            "time_travel_early",
            get("time_travel", &["early", "median_s"]),
            ours.tt_early_s,
            20.0,
        ),
        (
            "time_travel_last",
            get("time_travel", &["last", "median_s"]),
            ours.tt_last_s,
            20.0,
        ),
        ("fork", get("fork", &["wall_s"]), ours.fork_s, 50.0),
        (
            "fork_in_place",
            get("fork", &["wall_s"]),
            ours.fork_in_place_s,
            50.0,
        ),
        (
            "fork_copy",
            get("fork", &["wall_s"]),
            ours.fork_copy_s,
            50.0,
        ),
        (
            "fork_tick_writer",
            get("fork", &["wall_s"]),
            ours.fork_writer_s,
            50.0,
        ),
        (
            "bytes_per_update_tick",
            get("storage", &["bytes_per_update_tick"]),
            ours.bytes_per_update_tick,
            100.0,
        ),
        (
            "bytes_after_ingest",
            get("storage", &["after_ingest_bytes"]),
            ours.bytes_after_ingest as f64,
            1.0,
        ),
    ];
    for (what, reference, ours, target) in rows {
        let Some(reference) = reference else { continue };
        let ratio = if ours > 0.0 {
            reference / ours
        } else {
            f64::INFINITY
        };
        emit(json!({
            "bench": "parity",
            "phase": "ratio",
            "of": what,
            "n": n,
            "ticks": ticks,
            "reference": reference,
            "ours": ours,
            "ratio": round(ratio, 2),
            "target": target,
            "met": ratio >= target,
        }));
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
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

/// A small deterministic generator (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// `k` distinct indexes below `n` (partial Fisher-Yates over `pool`).
    fn sample(&mut self, pool: &mut [usize], k: usize) -> Vec<usize> {
        let k = k.min(pool.len());
        for i in 0..k {
            let j = i + self.below(pool.len() - i);
            pool.swap(i, j);
        }
        pool[..k].to_vec()
    }
}

const STATUSES: [&str; 5] = ["booting", "running", "stopping", "stopped", "crashed"];
const HARNESSES: [&str; 3] = ["claude-code", "opencode", "hermes"];
const EXPERIMENTS: [&str; 5] = [
    "nanogpt-speedrun",
    "kernel-tune",
    "sat-solver",
    "rust-port",
    "docs-fix",
];
const TASK_WORDS: &str = "optimize reduce latency refactor the training loop add tests fix flaky \
    benchmark port module to rust improve throughput profile memory usage \
    tighten error handling document public api";

/// Writes the `agents` table `bench.py` writes (same columns, same value
/// shapes and status weights; this generator's own random draws).
fn make_state_db(path: &Path, n: usize, seed: u64) -> Result<HashMap<String, usize>> {
    let words: Vec<&str> = TASK_WORDS.split_whitespace().collect();
    let mut rng = Rng(seed);
    let mut conn = rusqlite::Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "wal")?;
    conn.execute_batch(
        "CREATE TABLE agents (
            agent_id TEXT PRIMARY KEY, vm_name TEXT NOT NULL, status TEXT NOT NULL,
            harness TEXT NOT NULL, repo_url TEXT NOT NULL, branch TEXT NOT NULL,
            task TEXT NOT NULL, started_at TEXT NOT NULL, finished_at TEXT,
            agent_name TEXT NOT NULL, workspace_path TEXT NOT NULL)",
    )?;
    let mut counts = HashMap::new();
    let tx = conn.transaction()?;
    {
        let mut stmt =
            tx.prepare("INSERT INTO agents VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)")?;
        for i in 0..n {
            let exp = EXPERIMENTS[rng.below(EXPERIMENTS.len())];
            let harness = HARNESSES[rng.below(HARNESSES.len())];
            // Weights 1, 4, 1, 3, 1 as bench.py.
            let status = match rng.below(10) {
                0 => "booting",
                1..=4 => "running",
                5 => "stopping",
                6..=8 => "stopped",
                _ => "crashed",
            };
            *counts.entry(status.to_string()).or_default() += 1;
            let agent_id = format!("{:016x}-{i:07}", rng.next());
            let started = 37 * i as i64; // seconds after 2026-01-01T00:00:00Z
            let started_ms = rng.below(1000);
            let iso = |secs: i64, ms: usize| {
                let days = secs / 86_400;
                let s = secs % 86_400;
                // Days since 2026-01-01 fit in January-style day counting
                // only for small n; a civil date keeps every row valid.
                let (y, m, d) = civil_from_days(days);
                format!(
                    "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}000+00:00",
                    s / 3600,
                    (s / 60) % 60,
                    s % 60
                )
            };
            let finished = matches!(status, "stopped" | "crashed")
                .then(|| iso(started + 60 + rng.below(7140) as i64, started_ms));
            let task_len = 6 + rng.below(14);
            let task: Vec<&str> = (0..task_len)
                .map(|_| words[rng.below(words.len())])
                .collect();
            stmt.execute(rusqlite::params![
                agent_id,
                format!("vm-{exp}-{i:07}"),
                status,
                harness,
                format!("https://github.com/example/{exp}.git"),
                format!("auto/{exp}/{}", i % 97),
                task.join(" "),
                iso(started, started_ms),
                finished,
                format!("{exp}-{harness}"),
                format!("/var/lib/archetype-runner/workspaces/{agent_id}"),
            ])?;
        }
    }
    tx.commit()?;
    Ok(counts)
}

/// (year, month, day) of a day count since 2026-01-01 (Howard Hinnant's
/// `civil_from_days`, shifted).
fn civil_from_days(days_since_2026: i64) -> (i64, i64, i64) {
    let z = days_since_2026 + 20_454 + 719_468; // 2026-01-01 is day 20454 of the Unix epoch
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn next_status(s: &str) -> &'static str {
    let i = STATUSES.iter().position(|x| *x == s).unwrap_or(0);
    STATUSES[(i + 1) % STATUSES.len()]
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
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
    runs.iter()
        .map(|(e, b)| {
            Ok((
                e,
                RunRef::decode(b).with_context(|| format!("decoding the run of {e}"))?,
            ))
        })
        .collect()
}

fn status_map(runs: &ledger::ComponentValues) -> Result<HashMap<EntityId, String>> {
    Ok(decode_runs(runs)?
        .into_iter()
        .map(|(e, r)| (e, r.status.to_string()))
        .collect())
}

async fn case(
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
    let tables: serde_json::Map<String, Value> = redb
        .table_bytes()
        .await?
        .into_iter()
        .map(|t| (t.name.clone(), json!(t.total())))
        .collect();
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
        "bytes_per_tick": round(bytes_per_tick, 0)});
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

fn merge(into: &mut Value, from: &Value) {
    if let (Some(a), Some(b)) = (into.as_object_mut(), from.as_object()) {
        for (k, v) in b {
            a.insert(k.clone(), v.clone());
        }
    }
}
