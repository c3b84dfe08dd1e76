//! `cargo xtask bench ingest [--quick]`: a karpathy results.tsv of 50,000
//! rows imported (`ingest tsv`, target: 50,000 rows/s), the metric reader
//! on a 100 MB evaluator output (target: 200 MB/s), then the runner
//! ingest's first sync of a state.db with 100,000 agents rows, and a
//! re-sync after 1% of them changed.
//!
//! Each figure is measured against both the in-memory reference ledger and
//! the redb ledger (default config: durable). The re-sync is measured warm
//! (the same ingester, as `ingest runner --watch` keeps it: only rows whose
//! fingerprint changed are materialized) and cold (a new ingester, as a new
//! `ingest runner` process: the world is materialized and every row compared).
//! Each figure is the best of three repetitions, as wall time and as process
//! CPU time (the machine is shared; CPU time is the steadier of the two).
//!
//! `cargo xtask bench ingest --state-db PATH [--reps K]` measures only the
//! first sync of an existing runner file, K times (for profiling); with
//! `--plain`, a plain ingest of it written the straightforward way with
//! the same libraries instead (`ingest_plain`).

use super::emit;
use anyhow::{Context, Result, ensure};
use autoresearch_core::{MemoryStorage, Storage};
use autoresearch_runner::{RunnerConfig, RunnerIngest};
use autoresearch_store::{RedbConfig, RedbStorage};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Writes a WAL-mode state.db with `rows` agents rows, and with `reports`
/// a run_reports table holding one report per agent.
fn make_state_db(path: &Path, rows: usize, reports: bool) -> Result<()> {
    let mut conn = rusqlite::Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "wal")?;
    conn.execute_batch(
        "CREATE TABLE agents (
            agent_id TEXT PRIMARY KEY, vm_name TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'booting', harness TEXT NOT NULL,
            repo_url TEXT NOT NULL, branch TEXT NOT NULL, task TEXT NOT NULL,
            started_at TEXT NOT NULL, finished_at TEXT,
            agent_name TEXT NOT NULL DEFAULT '', workspace_path TEXT NOT NULL DEFAULT '')",
    )?;
    let tx = conn.transaction()?;
    {
        let mut stmt =
            tx.prepare("INSERT INTO agents VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)")?;
        for i in 0..rows {
            let harness = ["claude-code", "opencode", "hermes"][i % 3];
            let done = i % 4 != 0;
            let started = format!(
                "2026-04-{:02}T{:02}:{:02}:{:02}+00:00",
                1 + i % 28,
                i % 24,
                i % 60,
                (i / 60) % 60
            );
            let finished = done.then(|| format!("2026-04-{:02}T23:59:00.250Z", 1 + i % 28));
            stmt.execute(rusqlite::params![
                format!("agent-{i:08}"),
                format!("vm-{}", i % 64),
                if done { "stopped" } else { "running" },
                harness,
                "git@example.invalid:team/nanogpt.git",
                "main",
                format!("try idea #{i}: tune the learning-rate schedule and measure val_bpb"),
                started,
                finished,
                format!("exp{}-{harness}", i % 10),
                format!("/var/lib/runner/ws/{i}"),
            ])?;
        }
    }
    if reports {
        tx.execute_batch(
            "CREATE TABLE run_reports (
                report_id TEXT PRIMARY KEY, agent_id TEXT NOT NULL,
                request_id TEXT NOT NULL DEFAULT '', exit_status TEXT NOT NULL,
                commit_hash TEXT NOT NULL DEFAULT '', diff_stat TEXT NOT NULL DEFAULT '',
                stdout_tail TEXT NOT NULL DEFAULT '', stderr_tail TEXT NOT NULL DEFAULT '',
                metadata_json TEXT NOT NULL DEFAULT '{}', created_at TEXT NOT NULL)",
        )?;
        let mut stmt = tx.prepare(
            "INSERT INTO run_reports VALUES (?1, ?2, ?3, 'completed', ?4, ?5, ?6, '', '{}', ?7)",
        )?;
        for i in 0..rows {
            stmt.execute(rusqlite::params![
                format!("report-{i:08}"),
                format!("agent-{i:08}"),
                format!("req-{i}"),
                format!("{:040x}", i * 7919),
                " 3 files changed, 41 insertions(+), 12 deletions(-)",
                format!("step {i}: val_bpb 0.99{}\n", i % 97).repeat(4),
                format!("2026-04-{:02}T23:59:30Z", 1 + i % 28),
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Changes 1% of the rows (every 100th, starting at `offset`): the
/// runner finishing sessions.
fn change_rows(path: &Path, rows: usize, offset: usize) -> Result<usize> {
    let conn = rusqlite::Connection::open(path)?;
    let step = 100;
    let changed = conn.execute(
        "UPDATE agents SET status = 'crashed', finished_at = '2026-05-01T00:00:00Z'
         WHERE (CAST(substr(agent_id, 7) AS INTEGER) % ?1) = ?2",
        rusqlite::params![step as i64, offset as i64],
    )?;
    ensure!(
        changed == rows.div_ceil(step) || changed + 1 == rows.div_ceil(step),
        "changed {changed} rows"
    );
    // With reports, those sessions' reports change too (a new commit).
    let has_reports: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'run_reports'",
        [],
        |r| r.get(0),
    )?;
    if has_reports {
        conn.execute(
            "UPDATE run_reports SET commit_hash = printf('%040x', ?2 + rowid)
             WHERE (CAST(substr(agent_id, 7) AS INTEGER) % ?1) = ?2",
            rusqlite::params![step as i64, offset as i64],
        )?;
    }
    Ok(changed)
}

/// Process CPU time (user + system) so far, which on a shared, loaded
/// machine varies far less than wall time, and minor page faults (pages
/// the kernel mapped, and zeroed, on first touch).
pub(super) fn usage() -> (Duration, u64) {
    // SAFETY: rusage is plain integers, for which all zeroes is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage only writes the struct it is given, which outlives the call.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return (Duration::ZERO, 0);
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (tv(ru.ru_utime) + tv(ru.ru_stime), ru.ru_minflt as u64)
}

/// Wall and CPU time of one measured step.
#[derive(Clone, Copy)]
struct Took {
    wall: Duration,
    cpu: Duration,
    /// Minor page faults.
    faults: u64,
}

impl Took {
    fn min(self, o: Took) -> Took {
        Took {
            wall: self.wall.min(o.wall),
            cpu: self.cpu.min(o.cpu),
            faults: self.faults.min(o.faults),
        }
    }
}

pub(super) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

async fn timed<T>(f: impl Future<Output = T>) -> (T, Took) {
    let (w, (c, pf)) = (Instant::now(), usage());
    let out = f.await;
    let (c2, pf2) = usage();
    let took = Took {
        wall: w.elapsed(),
        cpu: c2.saturating_sub(c),
        faults: pf2.saturating_sub(pf),
    };
    (out, took)
}

/// The measured steps of one repetition, in order.
const STEPS: [&str; 5] = ["first", "warm", "cold", "cold_no_index", "unchanged"];

/// One repetition on a fresh file and ledger: the first sync; a warm re-sync
/// (same ingester); a cold one (new ingester, the index saved beside the
/// ledger, as the CLI does); a cold one without a saved index (the world is
/// materialized); and a warm sync of the unchanged file.
async fn one_rep(
    storage: Arc<dyn Storage>,
    db: &Path,
    cache_dir: &Path,
    rows: usize,
) -> Result<[(Took, usize); 5]> {
    let registry = Arc::new(autoresearch_runner::registry());
    let mut config = RunnerConfig::new(db);
    config.cache_dir = Some(cache_dir.to_path_buf());
    let mut ingest = RunnerIngest::new(storage.clone(), registry.clone(), config.clone());
    let (first, t_first) = timed(ingest.sync()).await;
    let first = first.context("first sync")?;
    ensure!(
        first.runs_added == rows,
        "first sync added {}",
        first.runs_added
    );
    let mut out = [(t_first, rows); 5];
    for (slot, offset) in [(1, 1), (2, 2), (3, 3)] {
        let changed = change_rows(db, rows, offset)?;
        if slot == 2 {
            // Cold: a new ingester, as a new `ingest runner` process has.
            ingest = RunnerIngest::new(storage.clone(), registry.clone(), config.clone());
        }
        if slot == 3 {
            let mut bare = config.clone();
            bare.cache_dir = None;
            ingest = RunnerIngest::new(storage.clone(), registry.clone(), bare);
        }
        let (re, took) = timed(ingest.sync()).await;
        let re = re.context("re-sync")?;
        ensure!(
            re.runs_changed == changed && re.runs_added == 0,
            "re-sync: {re:?}"
        );
        out[slot] = (took, changed);
    }
    let (re, took) = timed(ingest.sync()).await;
    let re = re.context("sync of the unchanged file")?;
    ensure!(re.tick.is_none() && re.rows_read == rows, "idle: {re:?}");
    out[4] = (took, 0);
    Ok(out)
}

/// A karpathy-shaped results.tsv of `rows` rows: every tenth a crash with
/// its `0.000000` placeholders, a third of the others kept.
fn make_results_tsv(path: &Path, rows: usize) -> Result<()> {
    let mut text = String::from("commit\tval_bpb\tmemory_gb\tstatus\tdescription\n");
    for i in 0..rows {
        let (bpb, mem, status) = match i % 10 {
            9 => ("0.000000".to_string(), "0.0".to_string(), "crash"),
            k => (
                format!("{:.6}", 1.0 - i as f64 * 1e-6),
                format!("{:.1}", 40.0 + (i % 50) as f64 / 10.0),
                if k % 3 == 0 { "keep" } else { "discard" },
            ),
        };
        text.push_str(&format!(
            "{:07x}\t{bpb}\t{mem}\t{status}\ttry idea #{i}: tune the learning rate\n",
            0x100_0000 + i
        ));
    }
    std::fs::write(path, text)?;
    Ok(())
}

/// `ingest tsv` of a 50,000-row file into a fresh ledger (memory and redb),
/// best of three, and a re-import of the same file (nothing new).
fn tsv_bench(rt: &tokio::runtime::Runtime, dir: &Path, quick: bool) -> Result<()> {
    use autoresearch_runner::tsv::{self, TsvImport};
    let rows = if quick { 10_000 } else { 50_000 };
    let reps = 3;
    let file = dir.join("results.tsv");
    make_results_tsv(&file, rows)?;
    let opts = TsvImport {
        experiment: "bench".into(),
        metric: None,
        direction: None,
        strict: true,
    };
    for backend in ["memory", "redb"] {
        let mut best: Option<(Took, Took)> = None;
        for rep in 0..reps {
            let storage: Arc<dyn Storage> = match backend {
                "memory" => Arc::new(MemoryStorage::default()),
                _ => Arc::new(
                    RedbStorage::open(&dir.join(format!("tsv-{rep}.redb")), RedbConfig::default())
                        .context("opening the redb ledger")?,
                ),
            };
            let registry = Arc::new(autoresearch_runner::registry());
            let (report, first) = rt.block_on(timed(tsv::import(
                storage.clone(),
                registry.clone(),
                &file,
                &opts,
            )));
            let report = report.context("importing results.tsv")?;
            ensure!(report.imported == rows, "imported {}", report.imported);
            let (again, re) = rt.block_on(timed(tsv::import(storage, registry, &file, &opts)));
            let again = again.context("re-importing results.tsv")?;
            ensure!(
                again.already_present == rows && again.imported == 0,
                "re-import: {again}"
            );
            best = Some(match best {
                None => (first, re),
                Some((a, b)) => (a.min(first), b.min(re)),
            });
        }
        let Some((first, re)) = best else {
            continue;
        };
        emit(json!({
            "bench": "ingest_tsv", "storage": backend, "rows": rows, "best_of": reps,
            "ms": ms(first.wall), "cpu_ms": ms(first.cpu),
            "rows_per_s": (rows as f64 / first.wall.as_secs_f64()).round(),
            "target_rows_per_s": 50_000,
            "reimport_ms": ms(re.wall),
            "reimport_rows_per_s": (rows as f64 / re.wall.as_secs_f64()).round(),
        }));
    }
    Ok(())
}

/// The metric reader over a 100 MB evaluator output (training-log lines,
/// colour codes, `\r` progress bars, the metric at the start and the end),
/// fed from memory in 64 KiB chunks and streamed from a file; best of three.
fn metric_reader_bench(dir: &Path, quick: bool) -> Result<()> {
    use autoresearch_core::metrics::{MetricReader, MetricSpec};
    let size = if quick { 20 << 20 } else { 100 << 20 };
    let mut text = String::with_capacity(size + 4096);
    text.push_str("score: 1\n");
    let mut i = 0u64;
    while text.len() < size {
        match i % 4 {
            0 => text.push_str(&format!(
                "step {i:>7} | loss: {:.4} | lr 3e-4 | {:.1} ms/step\n",
                3.0 / (1.0 + i as f64 * 1e-5),
                120.0 + (i % 13) as f64
            )),
            1 => text.push_str(&format!("\x1b[32mval\x1b[0m loss {:.5} at step {i}\n", 2.9)),
            2 => text.push_str(&format!(
                "{:>3}%|██████▍   | {i}/1000000 [00:12<00:03]\r",
                i % 100
            )),
            _ => text.push_str("warning: gradient norm is large, clipping\n"),
        }
        i += 1;
    }
    text.push_str("val_bpb: 0.997900\nscore: 3.2e-08\n");
    let bytes = text.as_bytes();
    let file = dir.join("eval.stdout.log");
    std::fs::write(&file, bytes)?;
    let spec = MetricSpec {
        syntax: Default::default(),
        required: vec!["score".into(), "val_bpb".into()],
    };
    let mut best_mem = Duration::MAX;
    let mut best_file = Duration::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let mut r = MetricReader::new(spec.clone());
        for chunk in bytes.chunks(64 * 1024) {
            r.feed(chunk);
        }
        let reading = r.finish();
        best_mem = best_mem.min(t.elapsed());
        ensure!(reading.check(&spec.required).is_ok(), "{reading:?}");
        ensure!(reading.values["score"].as_f64() == Some(3.2e-8));
        let t = Instant::now();
        let reading = MetricReader::new(spec.clone()).read_all(std::fs::File::open(&file)?)?;
        best_file = best_file.min(t.elapsed());
        ensure!(reading.values["val_bpb"].as_f64() == Some(0.9979));
    }
    let mb = bytes.len() as f64 / 1e6;
    emit(json!({
        "bench": "metric_reader", "bytes": bytes.len(), "lines": i, "best_of": 3,
        "ms": ms(best_mem), "mb_per_s": (mb / best_mem.as_secs_f64()).round(),
        "from_file_ms": ms(best_file), "from_file_mb_per_s": (mb / best_file.as_secs_f64()).round(),
        "target_mb_per_s": 200,
    }));
    Ok(())
}

/// `--state-db PATH [--reps K]`: only the first sync of an existing
/// runner file (the parity workload's, say) into a fresh durable redb
/// ledger, `K` times (default 9), one line per repetition and a summary
/// (median and best wall and CPU time): a steady figure to profile the
/// ingest with (`perf record` around this one step).
fn first_sync_bench(rt: &tokio::runtime::Runtime, db: &Path, reps: usize) -> Result<()> {
    ensure!(
        db.is_file(),
        "bench ingest: no runner file at {}",
        db.display()
    );
    let registry = Arc::new(autoresearch_runner::registry());
    let mut took = Vec::with_capacity(reps);
    for rep in 0..reps {
        let dir = tempfile::tempdir()?;
        let redb = Arc::new(
            RedbStorage::open(&dir.path().join("ledger.redb"), RedbConfig::default())
                .context("opening the redb ledger")?,
        );
        let storage: Arc<dyn Storage> = redb.clone();
        let mut ingest =
            RunnerIngest::new(storage.clone(), registry.clone(), RunnerConfig::new(db));
        let (report, t) = rt.block_on(timed(ingest.sync()));
        let report = report.with_context(|| format!("first sync of {}", db.display()))?;
        ensure!(report.runs_added > 0, "the first sync added no run");
        let stats = redb.commit_stats();
        emit(json!({
            "bench": "ingest_first_sync", "rep": rep, "runs": report.runs_added,
            "read_path": report.read_path, "ms": ms(t.wall), "cpu_ms": ms(t.cpu),
            "page_faults": t.faults, "ledger_commits": stats.transactions,
            "writer_apply_ms": stats.apply_ns as f64 / 1e6,
            "writer_commit_ms": stats.commit_ns as f64 / 1e6,
        }));
        took.push(t);
        drop(ingest);
        drop(storage);
        drop(redb);
    }
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let walls: Vec<Duration> = took.iter().map(|t| t.wall).collect();
    let cpus: Vec<Duration> = took.iter().map(|t| t.cpu).collect();
    emit(json!({
        "bench": "ingest_first_sync", "file": db.display().to_string(), "reps": reps,
        "median_ms": ms(median(walls.clone())), "best_ms": ms(walls.iter().copied().min().unwrap_or_default()),
        "median_cpu_ms": ms(median(cpus.clone())), "best_cpu_ms": ms(cpus.iter().copied().min().unwrap_or_default()),
    }));
    Ok(())
}

/// Runs the ingest benchmark; with `--state-db PATH [--reps K]` only the
/// first sync of that file ([`first_sync_bench`]).
pub fn run(quick: bool, args: &[String]) -> Result<()> {
    let mut state_db = None;
    let mut reps = 9;
    let mut plain = false;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--plain" {
            plain = true;
            continue;
        }
        let value = it
            .next()
            .with_context(|| format!("bench ingest: {flag} needs a value"))?;
        match flag.as_str() {
            "--state-db" => state_db = Some(std::path::PathBuf::from(value)),
            "--reps" => {
                reps = value
                    .parse::<usize>()
                    .ok()
                    .filter(|r| *r > 0)
                    .with_context(|| {
                        format!("bench ingest: --reps {value:?}: not a positive integer")
                    })?
            }
            other => anyhow::bail!(
                "bench ingest: unknown option {other:?} (expected --state-db, --reps, --plain)"
            ),
        }
    }
    if plain {
        let db = state_db.context("bench ingest: --plain needs --state-db PATH")?;
        return super::ingest_plain::run(&db, reps);
    }
    if let Some(db) = state_db {
        let rt = tokio::runtime::Runtime::new()?;
        return first_sync_bench(&rt, &db, reps);
    }
    let rows = if quick { 10_000 } else { 100_000 };
    let reps = 3;
    let dir = tempfile::tempdir()?;
    let rt = tokio::runtime::Runtime::new()?;
    tsv_bench(&rt, dir.path(), quick)?;
    metric_reader_bench(dir.path(), quick)?;
    // The issue's figures (agents only, both ledgers), then a file as a
    // runner keeps it, with a report per agent (redb only).
    for (backend, reports) in [("memory", false), ("redb", false), ("redb", true)] {
        let mut best: Option<[(Took, usize); 5]> = None;
        for rep in 0..reps {
            let db = dir
                .path()
                .join(format!("state-{backend}-{reports}-{rep}.db"));
            eprintln!(
                "ingest: {backend} rep {rep}: writing {rows} agents rows (reports: {reports})"
            );
            make_state_db(&db, rows, reports)?;
            let storage: Arc<dyn Storage> = match backend {
                "memory" => Arc::new(MemoryStorage::default()),
                _ => Arc::new(
                    RedbStorage::open(
                        &dir.path().join(format!("ledger-{reports}-{rep}.redb")),
                        RedbConfig::default(),
                    )
                    .context("opening the redb ledger")?,
                ),
            };
            let cache = dir
                .path()
                .join(format!("ledger-{backend}-{reports}-{rep}.runner-cache"));
            let r = rt.block_on(one_rep(storage, &db, &cache, rows))?;
            best = Some(match best {
                None => r,
                Some(b) => std::array::from_fn(|i| (b[i].0.min(r[i].0), r[i].1)),
            });
        }
        let Some(best) = best else {
            continue;
        };
        let first = best[0].0;
        emit(json!({
            "bench": "ingest", "storage": backend, "rows": rows, "reports": if reports { rows } else { 0 },
            "best_of": reps,
            "ms": ms(first.wall), "cpu_ms": ms(first.cpu),
            "rows_per_s": (rows as f64 / first.wall.as_secs_f64()).round(),
            "rows_per_cpu_s": (rows as f64 / first.cpu.as_secs_f64()).round(),
        }));
        for (mode, (t, changed)) in STEPS.iter().zip(best).skip(1) {
            emit(json!({
                "bench": "resync", "storage": backend, "mode": mode, "rows": rows,
                "reports": if reports { rows } else { 0 },
                "changed": changed, "best_of": reps,
                "ms": ms(t.wall), "cpu_ms": ms(t.cpu),
                "speedup": (first.wall.as_secs_f64() / t.wall.as_secs_f64() * 10.0).round() / 10.0,
                "cpu_speedup": (first.cpu.as_secs_f64() / t.cpu.as_secs_f64() * 10.0).round() / 10.0,
            }));
        }
    }
    Ok(())
}
