//! Re-syncs that learn which rows changed from the table's pages
//! (`RunnerConfig::page_reads`) write exactly the ledger that row scans
//! write, through a long random history of a runner file: inserts, status
//! changes, records that spill onto overflow pages and change only at their
//! end, deletes, reports, rewrites with the same values, VACUUM (which
//! renumbers pages and rowids) and a column added to the table.

mod common;

use autoresearch_core::{State, Storage, ledger as log};
use autoresearch_runner::{RunnerConfig, RunnerIngest, SyncReport};
use common::*;
use rusqlite::params;
use std::sync::Arc;

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

type Counts = (
    Option<u64>,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
);

fn counts(r: &SyncReport) -> Counts {
    (
        r.tick,
        r.reports_read,
        r.warnings_total,
        r.rows_read,
        r.runs_added,
        r.runs_changed,
        r.reports_attached,
        r.runs_missing,
        r.orphan_reports,
    )
}

async fn state(storage: &Arc<dyn Storage>) -> State {
    let info = storage.find_world("runner-fleet").await.unwrap().unwrap();
    log::state_at(storage.as_ref(), info.id, info.head)
        .await
        .unwrap()
}

/// One step of the runner's life.
fn mutate(db: &Db, rng: &mut Rng, next_id: &mut u64, step: usize) {
    let conn = &db.conn;
    let ids: Vec<String> = conn
        .prepare("SELECT agent_id FROM agents")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let pick =
        |rng: &mut Rng| ids[rng.below(ids.len().max(1) as u64) as usize % ids.len().max(1)].clone();
    for _ in 0..1 + rng.below(40) {
        match rng.below(10) {
            0..=2 => {
                let id = format!("a{:05}", *next_id);
                *next_id += 1;
                // Some tasks are long enough to spill onto overflow pages.
                let task = match rng.below(4) {
                    0 => "t".repeat(4_000 + rng.below(20_000) as usize),
                    _ => format!("task {id}"),
                };
                conn.execute(
                    "INSERT INTO agents (agent_id, vm_name, status, harness, repo_url, branch, task, started_at, finished_at, agent_name, workspace_path)
                     VALUES (?1, 'vm', 'booting', 'claude-code', 'git@x:r.git', 'main', ?2, ?3, NULL, ?4, '/ws')",
                    params![id, task, format!("2026-04-10T12:{:02}:00Z", rng.below(60)), format!("e{}-claude-code", rng.below(3))],
                )
                .unwrap();
            }
            _ if ids.is_empty() => {}
            3..=5 => {
                let status = ["running", "stopped", "crashed"][rng.below(3) as usize];
                db.set(&pick(rng), "status", Some(status));
            }
            6 => {
                // Only the last byte of a long task changes.
                conn.execute(
                    "UPDATE agents SET task = substr(task, 1, length(task) - 1) || char(97 + ?1) WHERE agent_id = ?2",
                    params![rng.below(26) as i64, pick(rng)],
                )
                .unwrap();
            }
            7 => {
                conn.execute(
                    "UPDATE agents SET finished_at = ?1 WHERE agent_id = ?2",
                    params![format!("2026-04-11T0{}:00:00Z", rng.below(10)), pick(rng)],
                )
                .unwrap();
            }
            8 => {
                let report = format!("r{step}-{}", rng.below(1_000_000));
                let commit = format!("c{:07x}", rng.below(1 << 28));
                match rng.below(6) {
                    // For an agent with no row yet (an orphan until it
                    // comes), or with ids that are not text (skipped).
                    0 => db.report(
                        &report,
                        &format!("a{:05}", *next_id + 1),
                        &commit,
                        "2026-04-11T00:00:00Z",
                    ),
                    1 => {
                        conn.execute(
                            "INSERT INTO run_reports (report_id, agent_id, exit_status, created_at) VALUES (?1, 12345, 'completed', 'x')",
                            [&report],
                        )
                        .unwrap();
                    }
                    // A report changed in place.
                    2 => {
                        conn.execute(
                            "UPDATE run_reports SET commit_hash = ?1 WHERE rowid = (
                                SELECT rowid FROM run_reports ORDER BY rowid LIMIT 1
                                OFFSET ?2 % max(1, (SELECT count(*) FROM run_reports)))",
                            params![commit, rng.below(1000) as i64],
                        )
                        .unwrap();
                    }
                    _ => db.report(&report, &pick(rng), &commit, "2026-04-11T00:00:00Z"),
                }
            }
            _ => match rng.below(3) {
                0 => {
                    conn.execute("DELETE FROM agents WHERE agent_id = ?1", [pick(rng)])
                        .unwrap();
                }
                1 => {
                    // Written again with the same values.
                    conn.execute(
                        "UPDATE agents SET status = status WHERE agent_id = ?1",
                        [pick(rng)],
                    )
                    .unwrap();
                }
                _ => {
                    conn.execute(
                        "UPDATE agents SET vm_name = vm_name || 'x' WHERE agent_id = ?1",
                        [pick(rng)],
                    )
                    .unwrap();
                }
            },
        }
    }
    if step == 9 {
        conn.execute_batch("VACUUM").unwrap();
    }
    if step == 14 {
        conn.execute_batch("ALTER TABLE agents ADD COLUMN note TEXT DEFAULT 'n'")
            .unwrap();
    }
}

#[tokio::test]
async fn page_reads_write_the_same_ledger_as_row_scans() {
    for seed in [1u64, 7, 2026] {
        let db = db(&[AGENTS, REPORTS]);
        let cache = tempfile::tempdir().unwrap();
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        // Warm with page reads; warm with row scans; a new ingester per sync
        // with page reads and the saved index (a new process each time).
        let mut pages = RunnerConfig::new(&db.path);
        pages.page_reads = true;
        let mut rows = pages.clone();
        rows.page_reads = false;
        let mut cold = pages.clone();
        cold.cache_dir = Some(cache.path().to_path_buf());
        let (ls, registry) = ledger();
        let ledgers = [ls, ledger().0, ledger().0];
        let mut warm_pages = RunnerIngest::new(ledgers[0].clone(), registry.clone(), pages);
        let mut warm_rows = RunnerIngest::new(ledgers[1].clone(), registry.clone(), rows);
        let mut next_id = 0;
        let mut changed = 0;
        for step in 0..20 {
            mutate(&db, &mut rng, &mut next_id, step);
            let a = warm_pages.sync().await.unwrap();
            let b = warm_rows.sync().await.unwrap();
            let c = RunnerIngest::new(ledgers[2].clone(), registry.clone(), cold.clone())
                .sync()
                .await
                .unwrap();
            assert_eq!(counts(&a), counts(&b), "seed {seed} step {step}");
            assert_eq!(counts(&a), counts(&c), "seed {seed} step {step}");
            let (sa, sb, sc) = (
                state(&ledgers[0]).await,
                state(&ledgers[1]).await,
                state(&ledgers[2]).await,
            );
            assert!(sa == sb, "seed {seed} step {step}: pages and rows differ");
            assert!(sa == sc, "seed {seed} step {step}: warm and cold differ");
            changed += a.runs_changed;
        }
        // The history did change runs, not only add them.
        assert!(changed > 20, "seed {seed}: {changed} runs changed");
    }
}
