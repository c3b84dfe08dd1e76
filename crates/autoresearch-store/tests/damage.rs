//! A damaged ledger file never makes an open or a read panic: every byte
//! flip of a small ledger (each non-empty page, several offsets, several
//! patterns) gives either the right answer or an error naming the file,
//! and a damaged catalogue never lets a second world take a used name.

use autoresearch_core::{ComponentRegistry, EntityId, Storage, Tick, World, WorldInfo, ledger};
use autoresearch_store::{RedbConfig, RedbStorage};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Score(i64);

fn registry() -> Arc<ComponentRegistry> {
    let mut r = ComponentRegistry::new();
    r.register::<Score>("Score").unwrap();
    Arc::new(r)
}

const PAGE: usize = 4096;

/// Worlds "a" (five ticks, snapshots every 2), its fork "b", and "c".
async fn build(path: &Path) {
    let config = RedbConfig {
        snapshot_interval: Some(2),
        ..RedbConfig::default()
    };
    let st: Arc<dyn Storage> = Arc::new(RedbStorage::open(path, config).unwrap());
    let mut a = World::create(st.clone(), registry(), "a").await.unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(a.spawn_with(&Score(i)).unwrap());
        if i > 1 {
            a.despawn(ids[0]).ok();
            a.insert(ids[1], &Score(10 * i)).unwrap();
        }
        a.commit().await.unwrap();
    }
    let b = a.fork(Tick(3), "b").await.unwrap();
    let mut b = World::open_id(st.clone(), registry(), b.id).await.unwrap();
    b.spawn_with(&Score(-1)).unwrap();
    b.commit().await.unwrap();
    let mut c = World::create(st, registry(), "c").await.unwrap();
    c.spawn_with(&Score(7)).unwrap();
    c.commit().await.unwrap();
}

/// What reads of one damaged file found.
#[derive(Default)]
struct Seen {
    errors: Vec<String>,
    /// Names a look-up reported absent although the intact file has them.
    vanished: Vec<String>,
    /// Names held by more than one world, or created a second time.
    doubled: Vec<String>,
}

/// Reads everything in the ledger, as the read commands would.
async fn read_all(st: &Arc<dyn Storage>, names: &[&str], seen: &mut Seen) {
    match st.list_worlds().await {
        Ok(worlds) => {
            let mut all: Vec<&str> = worlds.iter().map(|w| w.name.as_str()).collect();
            all.sort();
            for pair in all.windows(2) {
                if pair[0] == pair[1] {
                    seen.doubled.push(format!("{} listed twice", pair[0]));
                }
            }
            for w in &worlds {
                read_world(st, w, seen).await;
            }
        }
        Err(e) => seen.errors.push(e.to_string()),
    }
    for name in names {
        match st.find_world(name).await {
            Ok(Some(w)) => read_world(st, &w, seen).await,
            Ok(None) => seen.vanished.push(name.to_string()),
            Err(e) => seen.errors.push(e.to_string()),
        }
    }
}

async fn read_world(st: &Arc<dyn Storage>, w: &WorldInfo, seen: &mut Seen) {
    if let Err(e) = ledger::state_at(st.as_ref(), w.id, w.head).await {
        seen.errors.push(e.to_string());
    }
    if let Err(e) = ledger::entity_history(st.as_ref(), w.id, EntityId(1), w.head).await {
        seen.errors.push(e.to_string());
    }
    if let Err(e) = World::open_id(st.clone(), registry(), w.id).await {
        seen.errors.push(e.to_string());
    }
}

/// Opens the damaged file read-only, then read-write, and reads it all;
/// the read-write handle also tries to create each existing name again.
async fn probe(path: &Path, names: &[&str]) -> Seen {
    let mut seen = Seen::default();
    match RedbStorage::open_read_only(path) {
        Ok(st) => read_all(&(Arc::new(st) as Arc<dyn Storage>), names, &mut seen).await,
        Err(e) => seen.errors.push(e.to_string()),
    }
    match RedbStorage::open(path, RedbConfig::default()) {
        Ok(st) => {
            let st: Arc<dyn Storage> = Arc::new(st);
            read_all(&st, names, &mut seen).await;
            for name in names {
                if st.create_world(name).await.is_ok() {
                    seen.doubled.push(format!("{name} created a second time"));
                }
            }
        }
        Err(e) => seen.errors.push(e.to_string()),
    }
    seen
}

/// The `n`-th damage pattern applied to 16 bytes.
fn damage(bytes: &mut [u8], pattern: usize, seed: &mut u64) {
    for b in bytes {
        *b = match pattern {
            0 => *b ^ 0xff,
            1 => 0,
            _ => {
                // xorshift: a fixed pseudo-random sequence.
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                *seed as u8
            }
        };
    }
}

#[test]
fn no_byte_flip_makes_a_read_panic_or_double_a_world() {
    let dir = tempfile::tempdir().unwrap();
    let intact = dir.path().join("intact.redb");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(build(&intact));
    let original = std::fs::read(&intact).unwrap();
    let names = ["a", "b", "c"];
    let path = dir.path().join("l.redb");
    // Pages that hold something (most of a new file is unused space).
    let pages: Vec<usize> = (0..original.len() / PAGE)
        .filter(|p| original[p * PAGE..(p + 1) * PAGE].iter().any(|b| *b != 0))
        .collect();
    assert!(pages.len() > 4, "the ledger should span several pages");
    let offsets = [0, 16, 64, 200, 2048, PAGE - 16];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let (mut tried, mut failed_reads) = (0, 0);
    let mut problems = Vec::new();
    for &page in &pages {
        for &offset in &offsets {
            for pattern in 0..3 {
                let mut bytes = original.clone();
                let at = page * PAGE + offset;
                damage(&mut bytes[at..at + 16], pattern, &mut seed);
                std::fs::write(&path, &bytes).unwrap();
                let what = format!("page {page} offset {offset} pattern {pattern}");
                tried += 1;
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    rt.block_on(probe(&path, &names))
                }));
                let seen = match outcome {
                    Ok(seen) => seen,
                    Err(panic) => {
                        let msg = panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        problems.push(format!("{what}: panicked: {msg}"));
                        continue;
                    }
                };
                failed_reads += usize::from(!seen.errors.is_empty());
                for e in seen.errors.iter().filter(|e| !e.contains("l.redb")) {
                    problems.push(format!("{what}: error without the file: {e}"));
                }
                for n in &seen.vanished {
                    problems.push(format!("{what}: world {n:?} reported absent"));
                }
                for d in &seen.doubled {
                    problems.push(format!("{what}: {d}"));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems in {tried} damaged files, first ones:\n{}",
        problems.len(),
        problems
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The scan did damage something that matters.
    assert!(failed_reads > 0, "no damaged file failed a read");
    eprintln!("{tried} damaged files, {failed_reads} with read errors, pages {pages:?}");
}
