//! A child process for the ledger's multi-process and kill tests.
//!
//! `ledger_child append <ledger> <snapshot-interval|none> <tag> <count|0> <world>...`
//! appends `count` ticks (0: until killed), round-robin over the worlds. Each
//! tick spawns one entity holding a `Mark { writer: tag, seq }`; a commit
//! refused because another writer advanced the world is refreshed and
//! retried. After each commit returns it prints `committed <world> <seq>
//! <tick>` and flushes; at the end, `conflicts <n>`.
//!
//! `ledger_child hold <ledger> <millis>` opens the ledger for exclusive use,
//! prints `held`, and keeps it open for `millis`.
//!
//! `ledger_child read <ledger> <world> <millis>` reads the world's head state
//! over and over for `millis`, checking that it holds exactly one mark per
//! tick (no partial tick is ever visible). Prints `read <head>` per read and
//! `reads <n>` at the end.

use autoresearch_core::{ComponentRegistry, Error, Storage, StorageError, Tick, World, ledger};
use autoresearch_store::{RedbConfig, RedbStorage};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The one component of the test worlds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mark {
    /// The writing process's tag, from its command line.
    pub writer: String,
    /// The writer's running count of ticks, from 0, across all its worlds.
    pub seq: u64,
}

fn registry() -> Arc<ComponentRegistry> {
    let mut r = ComponentRegistry::new();
    r.register::<Mark>("Mark").expect("fresh registry");
    Arc::new(r)
}

fn open(path: &str, k: Option<u64>) -> Result<Arc<dyn Storage>, StorageError> {
    let config = RedbConfig {
        snapshot_interval: k,
        ..RedbConfig::default()
    };
    Ok(Arc::new(RedbStorage::open(Path::new(path), config)?))
}

async fn append(
    path: &str,
    k: Option<u64>,
    tag: &str,
    count: u64,
    names: &[String],
) -> Result<(), Error> {
    let st = open(path, k)?;
    let mut worlds = Vec::new();
    for name in names {
        worlds.push(World::open_or_create(st.clone(), registry(), name).await?);
    }
    let mut out = std::io::stdout().lock();
    let mut seq = 0u64;
    let mut conflicts = 0u64;
    while count == 0 || seq < count {
        let w = &mut worlds[(seq % names.len() as u64) as usize];
        let tick = loop {
            w.spawn_with(&Mark {
                writer: tag.to_string(),
                seq,
            })?;
            match w.commit().await {
                Ok(t) => break t,
                Err(Error::Storage(StorageError::Conflict { .. })) => {
                    conflicts += 1;
                    w.refresh().await?;
                }
                Err(e) => return Err(e),
            }
        };
        let _ = writeln!(out, "committed {} {seq} {}", w.name(), tick.0);
        let _ = out.flush();
        seq += 1;
    }
    let _ = writeln!(out, "conflicts {conflicts}");
    Ok(())
}

async fn read(path: &str, name: &str, millis: u64) -> Result<(), String> {
    let st = open(path, None).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut n = 0u64;
    let mut last = Tick::ZERO;
    while start.elapsed() < Duration::from_millis(millis) {
        let Some(info) = st.find_world(name).await.map_err(|e| e.to_string())? else {
            continue;
        };
        let state = ledger::state_at(st.as_ref(), info.id, info.head)
            .await
            .map_err(|e| e.to_string())?;
        if state.entities.len() as u64 != info.head.0 {
            return Err(format!(
                "{name} at tick {}: {} marks, expected one per tick",
                info.head,
                state.entities.len()
            ));
        }
        if info.head < last {
            return Err(format!("head went back from {last} to {}", info.head));
        }
        last = info.head;
        println!("read {}", info.head.0);
        n += 1;
    }
    println!("reads {n}");
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ledger_child: starting tokio: {e}");
            std::process::exit(2);
        }
    };
    let result = match args.first().map(String::as_str) {
        Some("append") if args.len() >= 6 => {
            let k = args[2].parse().ok();
            let count = args[4].parse().unwrap_or(0);
            rt.block_on(append(&args[1], k, &args[3], count, &args[5..]))
                .map_err(|e| e.to_string())
        }
        Some("hold") if args.len() == 3 => {
            let config = RedbConfig {
                sharing: autoresearch_store::Sharing::Exclusive,
                ..RedbConfig::default()
            };
            match RedbStorage::open(Path::new(&args[1]), config) {
                Ok(st) => {
                    println!("held");
                    let _ = std::io::stdout().flush();
                    std::thread::sleep(Duration::from_millis(args[2].parse().unwrap_or(1000)));
                    drop(st);
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            }
        }
        Some("read") if args.len() == 4 => {
            rt.block_on(read(&args[1], &args[2], args[3].parse().unwrap_or(1000)))
        }
        _ => Err("usage: ledger_child append|read ...".to_string()),
    };
    if let Err(e) = result {
        eprintln!("ledger_child: {e}");
        std::process::exit(1);
    }
}
