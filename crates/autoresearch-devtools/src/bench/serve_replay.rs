//! The replay view's part of `cargo xtask bench serve`: a fork of the
//! benchmark's world at its head (world `bench-replay`) in which
//! [`FLIPS`] discarded runs after the middle were kept instead, one tick,
//! as a replay under another comparator would record them; then the replay
//! view of that fork against its source: the first request (it indexes the
//! fork and matches both worlds' runs) and p50/p99 of its first page and of
//! a page of only the changed decisions.

use super::emit;
use anyhow::{Result, bail};
use autoresearch_core::{
    ComponentRegistry, EntityId, Outcome, OutcomeStatus, Storage, Tick, TickWriter, WorldId,
};
use autoresearch_store::{RedbConfig, RedbStorage, Sharing};
use serde_json::json;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Decisions changed in the fork.
pub const FLIPS: usize = 1_000;

/// What the benchmark's ledger build leaves for the fork.
pub struct Built {
    /// The source world.
    pub world: WorldId,
    /// Its head.
    pub head: Tick,
    /// Its next entity id.
    pub next_entity: u64,
    /// Discarded runs to keep in the fork: (entity, run id).
    pub flips: Vec<(EntityId, String)>,
}

/// Writes world `bench-replay`: `built.world` forked at its head, with its
/// `flips` kept (one tick).
pub async fn add_fork(path: &Path, built: Built) -> Result<()> {
    let config = RedbConfig {
        sharing: Sharing::Exclusive,
        durable: false,
        ..RedbConfig::default()
    };
    let storage: Arc<dyn Storage> = Arc::new(RedbStorage::open(path, config)?);
    let fork = storage
        .fork_world(built.world, built.head, "bench-replay")
        .await?;
    let mut w = TickWriter::resume(
        storage,
        Arc::new(ComponentRegistry::standard()),
        fork.id,
        built.head,
        built.next_entity,
    )
    .await?;
    for (e, run_id) in &built.flips {
        w.set(
            *e,
            &Outcome {
                run_id: run_id.clone(),
                status: OutcomeStatus::Keep,
                reason: "replay: kept under the other comparator".into(),
                comparator: "scalar:score:max".into(),
                ..Outcome::default()
            },
        )?;
    }
    w.commit().await?;
    Ok(())
}

/// The replay view's timings (see the module docs).
pub async fn measure(addr: SocketAddr, attempts: usize, n: usize) -> Result<()> {
    let page = "/worlds/bench-replay/replay";
    let (ttfb, total, code, bytes) =
        tokio::task::spawn_blocking(move || super::serve::get(addr, page)).await??;
    if code != 200 {
        bail!("GET {page}: status {code}");
    }
    let ms = |d: Duration| (d.as_secs_f64() * 1e4).round() / 10.0;
    emit(json!({
        "bench": "serve", "attempts": attempts,
        "page": "replay view (cold: indexes the fork, matches both worlds)",
        "cold_ttfb_ms": ms(ttfb), "cold_ms": ms(total), "bytes": bytes,
    }));
    super::serve::series(addr, attempts, "replay view", n, move |_| page.to_string()).await?;
    let pages = FLIPS.min(attempts / 2).div_ceil(50).max(1);
    super::serve::series(
        addr,
        attempts,
        "replay view, changed decisions only (a random page)",
        n,
        move |i| format!("{page}?show=changed&page={}", (i * 7 + 1) % pages + 1),
    )
    .await
}
