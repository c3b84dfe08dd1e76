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
//!   after ingest, after the updates and at the end; the `ingest` and
//!   `updates` lines also give each table's bytes (`table_bytes`).
//!
//! `--ingest-reps R` (default 5; 0 turns it off) then repeats the ingest
//! alone, the two engines alternated, R times each: `bench.py --ticks 1`
//! (its own `ingest` phase) and this engine's first sync in a fresh child
//! process (`bench ingest --state-db`, the CLI's case: nothing warm), both
//! on the same rows. One ingest of each is a single sample of a phase
//! that lasts tens of milliseconds on a machine whose speed moves by 2x
//! from one minute to the next; the `ingest_median` ratio compares the
//! medians of samples taken side by side. Beside them, each rep also
//! runs a plain ingest in a fresh child (`bench ingest --state-db
//! --plain`: rusqlite reads the rows, postcard encodes each into one redb
//! table, one durable commit; nothing a ledger needs beyond that), and
//! `ingest_plain_median` is the ratio that plain ingest reaches against
//! the reference on the same machine at the same time: what the
//! straightforward implementation on these libraries shows, beside what
//! this engine, doing all a ledger needs, shows.
//!
//! With `ANCHOR_PYTHON` set to a Python that has the reference installed
//! (`setup.sh` of the anchor), `bench.py` (`ANCHOR_BENCH`, default
//! `../shared/anchors/archetype-py/bench.py` beside the workspace) runs first
//! on the same N, T, seed and update fraction, its `state.db` becomes this
//! run's input, its lines are printed with `"engine": "archetype-ecs"`, and
//! one `ratio` line per phase compares the two (reference / ours for times,
//! so larger is better; reference bytes / ours for storage).

use super::emit;
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::collections::HashMap;

mod ours;
mod reference;
mod state_db;

use ours::case;
use reference::Anchor;

/// The options of one invocation.
struct Options {
    sizes: Vec<usize>,
    ticks: Vec<usize>,
    update_frac: f64,
    seed: u64,
    tt_reps: usize,
    ingest_reps: usize,
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
            ingest_reps: if quick { 0 } else { 5 },
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
                "--ingest-reps" => {
                    o.ingest_reps = value.parse().with_context(|| {
                        format!("bench parity: --ingest-reps {value:?}: not a count")
                    })?
                }
                other => bail!(
                    "bench parity: unknown option {other:?} (expected --n, --ticks, --update-frac, --seed, --tt-reps, --ingest-reps)"
                ),
            }
        }
        Ok(o)
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
                    let phases = a.run(&work, n, ticks, &options, true)?;
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
            if options.ingest_reps > 0 {
                ingest_reps(anchor.as_ref(), dir.path(), n, ticks, &options)?;
            }
        }
    }
    Ok(())
}

/// `--ingest-reps`: the ingest alone, the engines alternated (see the
/// module's docs); one line per engine with every sample and the median,
/// and the `ingest_median` ratio when the reference ran.
fn ingest_reps(
    anchor: Option<&Anchor>,
    dir: &std::path::Path,
    n: usize,
    ticks: usize,
    o: &Options,
) -> Result<()> {
    let db = dir.join("state.db");
    let exe = std::env::current_exe().context("locating this benchmark's binary")?;
    let (mut theirs, mut ours, mut plain) = (Vec::new(), Vec::new(), Vec::new());
    eprintln!(
        "parity: the ingest alone at N={n}, {} times each, alternated ...",
        o.ingest_reps
    );
    for rep in 0..o.ingest_reps {
        if let Some(a) = anchor {
            let work = dir.join(format!("anchor-ingest-{rep}"));
            let phases = a.run(&work, n, 1, o, false)?;
            let _ = std::fs::remove_dir_all(&work);
            let wall = phases
                .get("ingest")
                .and_then(|v| v.get("wall_s"))
                .and_then(Value::as_f64)
                .context("the reference's ingest line has no wall_s")?;
            theirs.push(wall);
        }
        ours.push(ours::first_sync_in_child(&exe, &db, false)?);
        plain.push(ours::first_sync_in_child(&exe, &db, true)?);
    }
    let line = |engine: &str, samples: &mut Vec<f64>| -> f64 {
        let shown = samples.clone();
        let m = median(samples);
        let process = match engine {
            "autoresearch" => "a fresh child process per sample (bench ingest --state-db)",
            "plain" => "a fresh child process per sample (bench ingest --state-db --plain)",
            _ => "bench.py --ticks 1 per sample",
        };
        let mut v = json!({"phase": "ingest_reps", "wall_s": shown, "median_s": m,
            "process": process});
        emit_as(&mut v, engine, n, ticks);
        m
    };
    let ours_m = line("autoresearch", &mut ours);
    let plain_m = line("plain", &mut plain);
    // This engine's ingest against the plain one, on the same rows.
    emit(json!({
        "bench": "parity", "phase": "ingest_plain", "n": n, "ticks": ticks,
        "ours": ours_m, "plain": plain_m,
        "ours_over_plain": round(ours_m / plain_m.max(1e-9), 2),
    }));
    if !theirs.is_empty() {
        let theirs_m = line("archetype-ecs", &mut theirs);
        let ratio = theirs_m / ours_m.max(1e-9);
        emit(json!({
            "bench": "parity", "phase": "ratio", "of": "ingest_median", "n": n, "ticks": ticks,
            "reference": theirs_m, "ours": ours_m, "samples": o.ingest_reps,
            "ratio": round(ratio, 2), "target": 20.0, "met": ratio >= 20.0,
        }));
        let plain_ratio = theirs_m / plain_m.max(1e-9);
        emit(json!({
            "bench": "parity", "phase": "ratio", "of": "ingest_plain_median", "n": n,
            "ticks": ticks, "reference": theirs_m, "plain": plain_m, "samples": o.ingest_reps,
            "ratio": round(plain_ratio, 2), "target": 20.0, "met": plain_ratio >= 20.0,
        }));
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

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn merge(into: &mut Value, from: &Value) {
    if let (Some(a), Some(b)) = (into.as_object_mut(), from.as_object()) {
        for (k, v) in b {
            a.insert(k.clone(), v.clone());
        }
    }
}
