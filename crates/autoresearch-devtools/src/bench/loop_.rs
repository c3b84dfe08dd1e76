//! `cargo xtask bench loop`: the controller's own cost per iteration.
//!
//! The real loop (redb ledger, local executor with private slot repositories, scalar
//! comparator) on a temp repository, with a trivial proposer and evaluator,
//! then with jobs that sleep 0.5 s, at parallel 1 and 2. Overhead of a round
//! is its wall time minus the time spent inside its child processes (the
//! longest of the round's runs, which run side by side); at parallel 1 a
//! round is one iteration. Last, the trivial loop at parallel 1 without and
//! with the bubblewrap sandbox, alternated: the sandbox's cost is the
//! difference of their `round_ms_p50`.
//!
//! `--executor slurm` (issue #18) measures the Slurm executor instead, on the
//! cluster `SLURM_CONF` names (`.ci/slurm-up.sh` starts one on loopback):
//! the trivial loop at parallel 1 on the local executor and on Slurm,
//! alternated (Slurm's per-iteration overhead is the difference of their
//! `overhead_ms_p50`), then jobs sleeping 2 s at parallel 1 and 4 on Slurm
//! (the speed-up is the ratio of their `iterations_per_s`; target >= 3.5).
//! Proposers run on Slurm too; the executor polls every 250 ms.

use super::emit;
use anyhow::{Context, bail};
use async_trait::async_trait;
use autoresearch_controller::sandbox::{Sandbox, SandboxConfig, SandboxMode};
use autoresearch_controller::{Controller, Event, LocalExecutor, LoopConfig, SlotCheckouts};
use autoresearch_core::exec::{ExecError, Executor, Job, JobReport};
use autoresearch_core::jobs::JobJournal;
use autoresearch_slurm::{SlurmConfig, SlurmExecutor};
use autoresearch_store::{RedbConfig, RedbStorage};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Wraps an executor and adds up the time each run spent inside its jobs.
struct Timed {
    inner: Arc<dyn Executor>,
    child_time: Mutex<HashMap<String, Duration>>,
}

#[async_trait]
impl Executor for Timed {
    fn name(&self) -> String {
        self.inner.name()
    }
    async fn run(&self, job: Job) -> Result<JobReport, ExecError> {
        self.run_journaled(job, Arc::new(autoresearch_core::jobs::NoJournal))
            .await
    }
    async fn run_journaled(
        &self,
        job: Job,
        journal: Arc<dyn JobJournal>,
    ) -> Result<JobReport, ExecError> {
        let run_id = job.run_id.clone();
        let r = self.inner.run_journaled(job, journal).await?;
        if let Ok(mut m) = self.child_time.lock() {
            *m.entry(run_id).or_default() += r.duration;
        }
        Ok(r)
    }
    async fn release(&self, run_id: &str) -> Result<(), ExecError> {
        self.inner.release(run_id).await
    }
    async fn close(&self) -> Result<(), ExecError> {
        self.inner.close().await
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// The jobs' sandbox of a measurement.
#[derive(Clone, Copy)]
enum Jail {
    None,
    Bwrap,
}

/// Where a measurement's jobs run.
#[derive(Clone, Copy)]
enum Where {
    /// The local executor, in this sandbox.
    Local(Jail),
    /// The Slurm executor, proposers included.
    Slurm,
}

async fn measure(parallel: usize, iterations: u64, sleep: f64, place: Where) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir().context("creating a temp dir")?;
    let repo = tmp.path().join("repo");
    super::init_repo(&repo, "f.txt", "start\n")?;
    let pause = if sleep > 0.0 {
        format!("sleep {sleep}; ")
    } else {
        String::new()
    };
    let state_dir = repo.join(".autoresearch");
    let cfg = LoopConfig {
        parallel,
        iterations,
        ..super::loop_config(
            "bench",
            &repo,
            format!("{pause}echo $AUTORESEARCH_RUN_ID > f.txt"),
            format!("{pause}echo \"score: $(cksum < f.txt | cut -c1-5)\""),
            "score",
        )
    };
    let storage = Arc::new(
        RedbStorage::open(&state_dir.join("ledger.redb"), RedbConfig::default())
            .context("opening the ledger")?,
    );
    let comparator = autoresearch_compare::from_spec("scalar:score:min")?;
    let jail = match place {
        Where::Local(jail) => jail,
        Where::Slurm => Jail::None,
    };
    let sandbox = match jail {
        Jail::None => Sandbox::none(),
        Jail::Bwrap => Sandbox::new(SandboxConfig {
            mode: SandboxMode::Bwrap,
            ..SandboxConfig::default()
        })?,
    };
    let local = Arc::new(LocalExecutor::new(&state_dir).with_sandbox(sandbox));
    let inner: Arc<dyn Executor> = match place {
        Where::Local(_) => local,
        Where::Slurm => {
            let mut table = toml::Table::new();
            let workdir = tmp.path().join("slurm");
            table.insert("workdir".into(), workdir.display().to_string().into());
            table.insert("propose_on".into(), "slurm".into());
            table.insert("poll_interval".into(), "250ms".into());
            let cfg = SlurmConfig::from_table(table, &repo.join("autoresearch.toml"))?;
            let checkouts = Arc::new(SlotCheckouts::new(workdir.join("slots")));
            Arc::new(SlurmExecutor::new(cfg, checkouts, local))
        }
    };
    let timed = Arc::new(Timed {
        inner,
        child_time: Mutex::new(HashMap::new()),
    });
    let finished: Arc<Mutex<Vec<(Instant, String, String)>>> = Arc::default();
    let f2 = finished.clone();
    let controller = Controller::open(cfg, storage, comparator, timed.clone())
        .await?
        .with_events(Arc::new(move |e| {
            if let Event::Finished { run_id, status, .. } = e
                && let Ok(mut v) = f2.lock()
            {
                v.push((Instant::now(), run_id.clone(), status.to_string()));
            }
        }));
    let summary = Arc::new(controller).run().await?;
    let events = finished.lock().map(|v| v.clone()).unwrap_or_default();
    let child = timed
        .child_time
        .lock()
        .map(|m| m.clone())
        .unwrap_or_default();
    let Some(baseline_at) = events.first().map(|e| e.0) else {
        bail!("the loop finished no run");
    };
    let runs: Vec<&(Instant, String, String)> = events.iter().skip(1).collect();
    let mut overheads = Vec::new();
    let mut walls = Vec::new();
    let mut prev = baseline_at;
    for round in runs.chunks(parallel) {
        let end = round.iter().map(|e| e.0).max().unwrap_or(prev);
        let inside = round
            .iter()
            .map(|e| child.get(&e.1).copied().unwrap_or_default())
            .max()
            .unwrap_or_default();
        let wall = end.duration_since(prev);
        walls.push(wall.as_secs_f64() * 1000.0);
        overheads.push(wall.saturating_sub(inside).as_secs_f64() * 1000.0);
        prev = end;
    }
    let total = prev.duration_since(baseline_at).as_secs_f64();
    let p50 = percentile(&mut overheads.clone(), 0.5);
    let p90 = percentile(&mut overheads, 0.9);
    emit(json!({
        "bench": "loop",
        "executor": match place { Where::Local(_) => "local", Where::Slurm => "slurm" },
        "sandbox": match jail { Jail::None => "none", Jail::Bwrap => "bwrap" },
        "parallel": parallel,
        "iterations": runs.len(),
        "job_sleep_s": sleep,
        "iterations_per_s": runs.len() as f64 / total,
        "overhead_ms_p50": p50,
        "overhead_ms_p90": p90,
        // Wall time of a round, sandbox set-up included (the overhead
        // above counts the time inside the job's process, bwrap's too).
        "round_ms_p50": percentile(&mut walls, 0.5),
        "kept": summary.kept,
        "discarded": summary.discarded,
        "crashed": summary.crashed,
    }));
    Ok(())
}

/// Runs the benchmark; `args` are its options (`--executor local|slurm`).
pub fn run(quick: bool, args: &[String]) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    match args {
        [] => {}
        [flag, value] if flag == "--executor" && value == "local" => {}
        [flag, value] if flag == "--executor" && value == "slurm" => {
            return rt.block_on(slurm(quick));
        }
        other => bail!("bench loop takes --executor local|slurm, got {other:?}"),
    }
    let (trivial, sleeping) = if quick { (20, 6) } else { (200, 200) };
    rt.block_on(async {
        for parallel in [1, 2] {
            eprintln!("loop: {trivial} trivial iterations at parallel {parallel}");
            measure(parallel, trivial, 0.0, Where::Local(Jail::None)).await?;
        }
        for parallel in [1, 2] {
            eprintln!("loop: {sleeping} iterations of 0.5 s jobs at parallel {parallel}");
            measure(parallel, sleeping, 0.5, Where::Local(Jail::None)).await?;
        }
        // The sandbox's cost: the same trivial loop without and with
        // bubblewrap, alternated, in this one run (compare round_ms_p50).
        for jail in [Jail::None, Jail::Bwrap, Jail::None, Jail::Bwrap] {
            eprintln!("loop: {trivial} trivial iterations at parallel 1, sandboxed or not");
            measure(1, trivial, 0.0, Where::Local(jail)).await?;
        }
        Ok(())
    })
}

/// The Slurm executor's figures (see the module doc).
async fn slurm(quick: bool) -> anyhow::Result<()> {
    if std::env::var_os("SLURM_CONF").is_none() {
        bail!(
            "bench loop --executor slurm needs a cluster: SLURM_CONF unset (`.ci/slurm-up.sh` starts one on loopback and prints its slurm.conf)"
        );
    }
    let (trivial, sleeping) = if quick { (8, 8) } else { (30, 24) };
    for place in [
        Where::Local(Jail::None),
        Where::Slurm,
        Where::Local(Jail::None),
        Where::Slurm,
    ] {
        eprintln!("loop: {trivial} trivial iterations at parallel 1, local or on Slurm");
        measure(1, trivial, 0.0, place).await?;
    }
    for parallel in [1, 4] {
        eprintln!("loop: {sleeping} iterations of 2 s jobs at parallel {parallel} on Slurm");
        measure(parallel, sleeping, 2.0, Where::Slurm).await?;
    }
    Ok(())
}
