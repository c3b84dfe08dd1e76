//! `cargo xtask bench serve [--quick] [--attempts N] [--loop-only]`: the dashboard's
//! response times over real HTTP, at 1,000 attempts and at a large history
//! (1,000,000; 20,000 with `--quick`; `--attempts` sets it).
//!
//! Each ledger holds one experiment world whose attempts are written
//! through the library (`TickWriter`, 1,000 attempts a tick, each a Run
//! with one Result and an Outcome, one keep in 200), into a file the
//! dashboard then opens read-only, as `autoresearch serve` does. Over
//! HTTP/1.1 on loopback it measures time to first byte and to the complete
//! response, p50 and p99, for: the experiment page, the attempts table's
//! next page (HTML and JSON), and a run page (a random run each time). The
//! first request, which builds the dashboard's index of the world, is
//! reported on its own (`cold_ms`); then the replay view of a fork of it
//! ([`super::serve_replay`]). Last, the rate of a writer's durable
//! appends to another world of the ledger with and without a live page
//! polling it (`loop_overhead`), and the real loop's iterations per second
//! without and with a client on its dashboard, alternated
//! ([`super::serve_loop`]; `--loop-only` runs that part alone).

use super::emit;
use anyhow::{Context, Result, bail};
use autoresearch_core::{
    BranchHead, ComponentRegistry, EvalResult, Experiment, Outcome, OutcomeStatus, Run, RunStatus,
    Storage, TickWriter, World,
};
use autoresearch_store::{RedbConfig, RedbStorage, Sharing};
use serde_json::json;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Attempts written per tick while building a ledger.
const PER_TICK: usize = 1_000;

/// Parses `--attempts N` and `--loop-only`.
fn large_size(quick: bool, args: &[String]) -> Result<(usize, bool)> {
    let mut n = if quick { 20_000 } else { 1_000_000 };
    let mut loop_only = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--loop-only" => loop_only = true,
            "--attempts" => {
                let v = it.next().context("--attempts needs a number")?;
                n = v
                    .parse()
                    .with_context(|| format!("--attempts {v:?} is not a number"))?;
            }
            other => bail!(
                "benchmark serve: unknown option {other:?} (expected --attempts N or --loop-only)"
            ),
        }
    }
    Ok((n, loop_only))
}

pub fn run(quick: bool, args: &[String]) -> Result<()> {
    let (large, loop_only) = large_size(quick, args)?;
    let requests = if quick { 40 } else { 200 };
    let dir = tempfile::Builder::new()
        .prefix("bench-serve")
        .tempdir_in(std::env::temp_dir())
        .context("creating the benchmark directory")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(async {
        if loop_only {
            return super::serve_loop::loop_with_dashboard(quick).await;
        }
        for attempts in [1_000, large] {
            let path = dir.path().join(format!("ledger-{attempts}.redb"));
            let t = Instant::now();
            let built = build(&path, attempts).await?;
            super::serve_replay::add_fork(&path, built).await?;
            let build_s = t.elapsed().as_secs_f64();
            eprintln!("serve: {attempts} attempts written in {build_s:.1} s");
            measure(&path, attempts, requests, build_s).await?;
            std::fs::remove_file(&path).ok();
        }
        loop_overhead(dir.path(), quick).await?;
        super::serve_loop::loop_with_dashboard(quick).await
    })
}

fn registry() -> Arc<ComponentRegistry> {
    Arc::new(ComponentRegistry::standard())
}

/// Writes world `autoresearch:bench` (experiment `bench`) with `attempts`
/// decided attempts, run ids `run-0000000` on; `bench history` reuses it.
/// Returns the writer's head and next entity, and the entities of the
/// discarded runs after the middle (up to [`super::serve_replay::FLIPS`]),
/// for the replay view's fork.
pub(super) async fn build(path: &Path, attempts: usize) -> Result<super::serve_replay::Built> {
    let config = RedbConfig {
        sharing: Sharing::Exclusive,
        durable: false,
        ..RedbConfig::default()
    };
    let storage: Arc<dyn Storage> = Arc::new(RedbStorage::open(path, config)?);
    let mut w = TickWriter::create(storage.clone(), registry(), "autoresearch:bench").await?;
    let exp = w.spawn();
    w.set(
        exp,
        &Experiment::new("bench", "/repo", "main", 1, &json!({})),
    )?;
    let head_entity = w.spawn();
    let mut best = 100.0;
    let mut flips = Vec::new();
    for n in 0..attempts {
        let run_id = format!("run-{n:07}");
        let commit = format!("{n:040x}");
        let keep = n % 200 == 0;
        let score = if keep {
            best -= 0.01;
            best
        } else {
            best + 0.5 + (n % 97) as f64 / 100.0
        };
        let mut run = Run::new(&run_id, "bench");
        run.task = format!("try idea {n}: change the learning rate schedule");
        run.commit_hash = commit.clone();
        run.started_at_ms = 1_700_000_000_000 + n as i64 * 1000;
        run.finished_at_ms = run.started_at_ms + 900;
        run.set_status(RunStatus::Stopped);
        let e = w.spawn();
        w.set(e, &run)?;
        let r = w.spawn();
        w.set(
            r,
            &EvalResult::new(
                &run_id,
                "eval",
                &json!({"score": score, "seconds": 1.5, "_meta": {"commit": commit, "sample": 0}}),
                run.finished_at_ms,
            ),
        )?;
        let status = if keep {
            OutcomeStatus::Keep
        } else {
            OutcomeStatus::Discard
        };
        if !keep && n >= attempts / 2 && flips.len() < super::serve_replay::FLIPS {
            flips.push((e, run_id.clone()));
        }
        w.set(
            e,
            &Outcome {
                run_id: run_id.clone(),
                status,
                reason: if keep {
                    "better".into()
                } else {
                    "not better".into()
                },
                comparator: "scalar:score:min".into(),
                ..Outcome::default()
            },
        )?;
        if keep {
            let head = BranchHead::new("bench", &commit, &run_id, &json!({}), run.finished_at_ms);
            w.set(head_entity, &head)?;
        }
        if (n + 1) % PER_TICK == 0 {
            w.commit().await?;
        }
    }
    w.commit().await?;
    Ok(super::serve_replay::Built {
        world: w.info().id,
        head: w.head(),
        next_entity: w.next_entity(),
        flips,
    })
}

/// Time to first byte and to the end of one `GET path` (HTTP/1.1,
/// `Connection: close`), and the status code.
pub(super) fn get(addr: SocketAddr, path: &str) -> Result<(Duration, Duration, u16, usize)> {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(600)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut first = [0u8; 1];
    s.read_exact(&mut first)?;
    let ttfb = t.elapsed();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)?;
    let total = t.elapsed();
    let head = String::from_utf8_lossy(&rest[..rest.len().min(20)]).to_string();
    let code = format!("{}{head}", first[0] as char)
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((ttfb, total, code, rest.len() + 1))
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    (sorted[i] * 1000.0).round() / 1000.0
}

/// Requests `path(i)` `n` times from a blocking thread; emits p50/p99.
pub(super) async fn series(
    addr: SocketAddr,
    attempts: usize,
    what: &str,
    n: usize,
    path: impl Fn(usize) -> String + Send + 'static,
) -> Result<()> {
    let (mut ttfb, mut total, bytes) = tokio::task::spawn_blocking(move || -> Result<_> {
        let (mut a, mut b, mut bytes) = (Vec::new(), Vec::new(), 0);
        for i in 0..n {
            let p = path(i);
            let (t1, t2, code, len) = get(addr, &p)?;
            if code != 200 {
                bail!("GET {p}: status {code}");
            }
            a.push(t1.as_secs_f64() * 1000.0);
            b.push(t2.as_secs_f64() * 1000.0);
            bytes = len;
        }
        Ok((a, b, bytes))
    })
    .await??;
    ttfb.sort_by(f64::total_cmp);
    total.sort_by(f64::total_cmp);
    emit(json!({
        "bench": "serve", "attempts": attempts, "page": what, "requests": n,
        "ttfb_ms_p50": pct(&ttfb, 0.5), "ttfb_ms_p99": pct(&ttfb, 0.99),
        "complete_ms_p50": pct(&total, 0.5), "complete_ms_p99": pct(&total, 0.99),
        "bytes": bytes,
    }));
    Ok(())
}

async fn measure(path: &Path, attempts: usize, n: usize, build_s: f64) -> Result<()> {
    let storage: Arc<dyn Storage> = Arc::new(RedbStorage::open_read_only(path)?);
    let app = autoresearch_web::router(
        storage,
        registry(),
        autoresearch_web::DashboardConfig {
            metric: Arc::new(|spec: &str| {
                spec.split(':')
                    .nth(1)
                    .map(|m| (m.to_string(), !spec.ends_with(":max")))
            }),
            ..autoresearch_web::DashboardConfig::read_only("bench")
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(autoresearch_web::serve(listener, app, async {
        let _ = stopped.await;
    }));
    let world = "/worlds/autoresearch%3Abench";
    let (cold_ttfb, cold, code, _) =
        tokio::task::spawn_blocking(move || get(addr, "/worlds/autoresearch%3Abench")).await??;
    if code != 200 {
        bail!("the experiment page answered {code}");
    }
    emit(json!({
        "bench": "serve", "attempts": attempts, "page": "experiment (cold: builds the index)",
        "build_ledger_s": (build_s * 10.0).round() / 10.0,
        "cold_ttfb_ms": (cold_ttfb.as_secs_f64() * 1e4).round() / 10.0,
        "cold_ms": (cold.as_secs_f64() * 1e4).round() / 10.0,
    }));
    series(addr, attempts, "experiment", n, move |_| world.to_string()).await?;
    series(
        addr,
        attempts,
        "attempts table, next page (HTML)",
        n,
        move |_| format!("{world}?page=2"),
    )
    .await?;
    series(
        addr,
        attempts,
        "attempts table, next page (JSON)",
        n,
        |_| "/api/worlds/autoresearch%3Abench/attempts?page=2".to_string(),
    )
    .await?;
    series(addr, attempts, "run", n, move |i| {
        let k = (i.wrapping_mul(7919) + 13) % attempts;
        format!("{world}/runs/run-{k:07}")
    })
    .await?;
    super::serve_replay::measure(addr, attempts, n).await?;
    let _ = stop.send(());
    server.await??;
    Ok(())
}

/// A writer's durable append rate to its own world while the dashboard
/// follows the ledger (one live page's event stream open, polling every
/// 100 ms, and the page fetched on each new tick), against the same
/// writer with no dashboard: the dashboard only reads, so the difference
/// should be noise.
async fn loop_overhead(dir: &Path, quick: bool) -> Result<()> {
    let path = dir.join("ledger-loop.redb");
    let storage: Arc<dyn Storage> = Arc::new(RedbStorage::open(&path, RedbConfig::default())?);
    let ticks = if quick { 100 } else { 400 };
    let mut world = World::create(storage.clone(), registry(), "autoresearch:loop").await?;
    world.spawn_with(&Experiment::new("loop", "/r", "main", 1, &json!({})))?;
    world.commit().await?;
    let mut rates = Vec::new();
    for round in 0..4 {
        let with_dashboard = round % 2 == 1;
        let served = if with_dashboard {
            let ro: Arc<dyn Storage> = Arc::new(RedbStorage::open_read_only(&path)?);
            let app = autoresearch_web::router(
                ro,
                registry(),
                autoresearch_web::DashboardConfig {
                    poll_interval: Duration::from_millis(100),
                    ..autoresearch_web::DashboardConfig::read_only("bench")
                },
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(autoresearch_web::serve(listener, app, async {
                let _ = stopped.await;
            }));
            let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let d = done.clone();
            // A page: the event stream open, and the live part fetched on every event.
            let page = std::thread::spawn(move || -> Result<usize> {
                let mut s = TcpStream::connect(addr)?;
                s.set_read_timeout(Some(Duration::from_millis(200)))?;
                write!(
                    s,
                    "GET /worlds/autoresearch%3Aloop/events HTTP/1.1\r\nHost: {addr}\r\n\r\n"
                )?;
                let mut fetched = 0;
                let mut buf = [0u8; 4096];
                while !d.load(std::sync::atomic::Ordering::SeqCst) {
                    match s.read(&mut buf) {
                        Ok(0) => break,
                        Ok(k) if String::from_utf8_lossy(&buf[..k]).contains("event: tick") => {
                            get(addr, "/worlds/autoresearch%3Aloop/live")?;
                            fetched += 1;
                        }
                        _ => {}
                    }
                }
                Ok(fetched)
            });
            Some((stop, server, done, page))
        } else {
            None
        };
        let t = Instant::now();
        for i in 0..ticks {
            let mut run = Run::new(format!("r{round}-{i}"), "loop");
            run.set_status(RunStatus::Stopped);
            world.spawn_with(&run)?;
            world.commit().await?;
        }
        let rate = ticks as f64 / t.elapsed().as_secs_f64();
        let mut fetched = 0;
        if let Some((stop, server, done, page)) = served {
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            fetched = page
                .join()
                .map_err(|_| anyhow::anyhow!("the page thread panicked"))??;
            let _ = stop.send(());
            server.await??;
        }
        rates.push((with_dashboard, rate));
        emit(json!({
            "bench": "serve", "page": "loop overhead", "round": round,
            "dashboard_polling": with_dashboard, "durable_ticks_per_s": rate.round(),
            "live_fetches": fetched,
        }));
    }
    let mean = |d: bool| {
        let v: Vec<f64> = rates.iter().filter(|r| r.0 == d).map(|r| r.1).collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    emit(json!({
        "bench": "serve", "page": "loop overhead (mean of 2 rounds each)",
        "without_dashboard_ticks_per_s": mean(false).round(),
        "with_dashboard_ticks_per_s": mean(true).round(),
        "change_pct": ((mean(true) / mean(false) - 1.0) * 1000.0).round() / 10.0,
    }));
    Ok(())
}
