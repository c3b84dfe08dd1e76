//! The last part of `cargo xtask bench serve`: the real loop's iterations
//! per second without and with a client on the dashboard of its ledger.
//!
//! Each round runs the controller (redb ledger, local executor, scalar
//! comparator) for a fixed number of iterations of a trivial proposer and
//! evaluator on a fresh temp repository. In a "with" round the dashboard
//! serves that ledger (opened read-only, as `autoresearch serve` opens it)
//! and a client thread keeps a live page's event stream open (fetching the
//! page's live part on every new tick, as the page's script does) and
//! fetches the whole experiment page every 100 ms. Rounds alternate
//! without, with, without, ... in one run, so that a drift of the machine
//! falls on both; the figure is the ratio of the mean rates, with the
//! spread of the ratios of adjacent pairs.

use super::emit;
use anyhow::{Context, Result, bail};
use autoresearch_controller::{Controller, Event, LocalExecutor, LoopConfig};
use autoresearch_core::Storage;
use autoresearch_store::{RedbConfig, RedbStorage};
use serde_json::json;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A repository with one commit on `main`, in `dir/repo`.
fn repo_in(dir: &Path) -> Result<std::path::PathBuf> {
    let repo = dir.join("repo");
    super::init_repo(&repo, "f.txt", "start\n")?;
    Ok(repo)
}

/// One plain `GET path` with `Connection: close`; the status code.
fn get(addr: SocketAddr, path: &str) -> Result<u16> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let head = String::from_utf8_lossy(&buf[..buf.len().min(16)]).to_string();
    Ok(head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0))
}

/// The client of a "with" round: a live page (its event stream open, the
/// live part fetched on every tick) and a poll of the whole page every
/// 100 ms, until `done`. Returns the requests it made.
fn client(addr: SocketAddr, done: Arc<AtomicBool>) -> Result<usize> {
    const PAGE: &str = "/worlds/autoresearch%3Abench";
    let poller = {
        let done = done.clone();
        std::thread::spawn(move || -> Result<usize> {
            let mut n = 0;
            while !done.load(Ordering::SeqCst) {
                let code = get(addr, PAGE)?;
                // 404 until the loop has created its world.
                if code != 200 && code != 404 {
                    bail!("GET {PAGE}: status {code}");
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(n)
        })
    };
    let mut fetched = 0;
    // The world exists once the loop has written its first tick.
    let mut stream = loop {
        if done.load(Ordering::SeqCst) {
            break None;
        }
        if get(addr, PAGE)? == 200 {
            let mut s = TcpStream::connect(addr)?;
            s.set_read_timeout(Some(Duration::from_millis(200)))?;
            write!(s, "GET {PAGE}/events HTTP/1.1\r\nHost: {addr}\r\n\r\n")?;
            break Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut buf = [0u8; 4096];
    while let Some(s) = stream.as_mut() {
        if done.load(Ordering::SeqCst) {
            break;
        }
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(k) if String::from_utf8_lossy(&buf[..k]).contains("event: tick") => {
                get(addr, &format!("{PAGE}/live"))?;
                fetched += 1;
            }
            _ => {}
        }
    }
    let polled = poller
        .join()
        .map_err(|_| anyhow::anyhow!("the polling thread panicked"))??;
    Ok(fetched + polled)
}

/// One round: `iterations` of the trivial loop, with a dashboard client or
/// not. Returns (iterations per second after the baseline, client requests).
async fn round(iterations: u64, with_dashboard: bool) -> Result<(f64, usize)> {
    let tmp = tempfile::tempdir().context("creating a temp dir")?;
    let repo = repo_in(tmp.path())?;
    let state_dir = repo.join(".autoresearch");
    std::fs::create_dir_all(&state_dir)?;
    let path = state_dir.join("ledger.redb");
    let storage = Arc::new(RedbStorage::open(&path, RedbConfig::default())?);
    let served = if with_dashboard {
        let ro: Arc<dyn Storage> = Arc::new(RedbStorage::open_read_only(&path)?);
        let app = autoresearch_web::router(
            ro,
            Arc::new(autoresearch_core::ComponentRegistry::standard()),
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
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let page = std::thread::spawn(move || client(addr, d));
        Some((stop, server, done, page))
    } else {
        None
    };
    let cfg = LoopConfig {
        iterations,
        ..super::loop_config(
            "bench",
            &repo,
            "echo $AUTORESEARCH_RUN_ID > f.txt".into(),
            "echo \"score: $(cksum < f.txt | cut -c1-5)\"".into(),
            "score",
        )
    };
    let comparator = autoresearch_compare::from_spec("scalar:score:min")?;
    let executor = Arc::new(LocalExecutor::new(&state_dir));
    let finished: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let f2 = finished.clone();
    let controller = Controller::open(cfg, storage, comparator, executor)
        .await?
        .with_events(Arc::new(move |e| {
            if let Event::Finished { .. } = e
                && let Ok(mut v) = f2.lock()
            {
                v.push(Instant::now());
            }
        }));
    let result = Arc::new(controller).run().await;
    let mut requests = 0;
    if let Some((stop, server, done, page)) = served {
        done.store(true, Ordering::SeqCst);
        requests = page
            .join()
            .map_err(|_| anyhow::anyhow!("the client thread panicked"))??;
        let _ = stop.send(());
        server.await??;
    }
    result?;
    let times = finished.lock().map(|v| v.clone()).unwrap_or_default();
    let (Some(first), Some(last)) = (times.first(), times.last()) else {
        bail!("the loop finished no run");
    };
    let runs = times.len().saturating_sub(1);
    if runs == 0 {
        bail!("the loop finished only its baseline");
    }
    Ok((
        runs as f64 / last.duration_since(*first).as_secs_f64(),
        requests,
    ))
}

/// Alternating rounds without and with the dashboard (see the module docs).
pub async fn loop_with_dashboard(quick: bool) -> Result<()> {
    let (iterations, pairs) = if quick { (10, 2) } else { (40, 4) };
    let mut rates: Vec<(bool, f64)> = Vec::new();
    for i in 0..pairs * 2 {
        let with_dashboard = i % 2 == 1;
        eprintln!(
            "serve: loop round {} of {} ({iterations} iterations, dashboard {})",
            i + 1,
            pairs * 2,
            if with_dashboard { "polled" } else { "off" }
        );
        let (rate, requests) = round(iterations, with_dashboard).await?;
        emit(json!({
            "bench": "serve", "page": "loop iterations with and without the dashboard",
            "round": i, "dashboard_polling": with_dashboard, "iterations": iterations,
            "iterations_per_s": (rate * 100.0).round() / 100.0, "client_requests": requests,
        }));
        rates.push((with_dashboard, rate));
    }
    let mean = |d: bool| {
        let v: Vec<f64> = rates.iter().filter(|r| r.0 == d).map(|r| r.1).collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    let ratios: Vec<f64> = rates.chunks(2).map(|p| p[1].1 / p[0].1).collect();
    let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let r3 = |x: f64| (x * 1000.0).round() / 1000.0;
    emit(json!({
        "bench": "serve", "page": "loop iterations with and without the dashboard (summary)",
        "rounds_each": pairs,
        "without_iterations_per_s": (mean(false) * 100.0).round() / 100.0,
        "with_iterations_per_s": (mean(true) * 100.0).round() / 100.0,
        "ratio_with_over_without": r3(mean(true) / mean(false)),
        "pair_ratio_min": r3(lo), "pair_ratio_max": r3(hi),
    }));
    Ok(())
}
