//! Re-syncs that learn which rows changed from the table's pages
//! (`RunnerConfig::page_reads`) write exactly the ledger that row scans
//! write. A property test: random histories of a runner file (inserts,
//! status changes, records that spill onto overflow pages and change only at
//! their end, deletes, reports of every kind, rewrites with the same values,
//! VACUUM, which renumbers pages and rowids, and a column added to the
//! table), synced after every step by three ingesters side by side.

mod common;

use autoresearch_core::{State, Storage, ledger as log};
use autoresearch_runner::{RunnerConfig, RunnerIngest, SyncReport};
use autoresearch_test_support::statedb::*;
use common::ledger;
use proptest::prelude::*;
use rusqlite::params;
use std::sync::Arc;

/// One change the runner makes to its file. `pick` chooses an existing
/// agent (modulo their number).
#[derive(Clone, Debug)]
enum Op {
    /// A new agent; a long task spills onto overflow pages.
    Insert {
        long: Option<u16>,
        minute: u8,
        exp: u8,
    },
    Status {
        pick: u16,
        status: u8,
    },
    /// Only the last byte of the task changes.
    TaskEnd {
        pick: u16,
        letter: u8,
    },
    Finished {
        pick: u16,
        hour: u8,
    },
    Report {
        pick: u16,
        commit: u32,
    },
    /// A report for an agent with no row yet (an orphan until it comes).
    OrphanReport {
        ahead: u8,
    },
    /// A report whose agent_id is not text (skipped with a warning).
    BadReport,
    /// A report's commit changed in place.
    ReportChanged {
        pick: u16,
        commit: u32,
    },
    Delete {
        pick: u16,
    },
    /// Written again with the same values.
    SameValues {
        pick: u16,
    },
    Vacuum,
    AddColumn,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (prop::option::weighted(0.25, 4_000u16..24_000), 0u8..60, 0u8..3)
            .prop_map(|(long, minute, exp)| Op::Insert { long, minute, exp }),
        4 => (any::<u16>(), 0u8..3).prop_map(|(pick, status)| Op::Status { pick, status }),
        1 => (any::<u16>(), 0u8..26).prop_map(|(pick, letter)| Op::TaskEnd { pick, letter }),
        1 => (any::<u16>(), 0u8..10).prop_map(|(pick, hour)| Op::Finished { pick, hour }),
        2 => (any::<u16>(), any::<u32>()).prop_map(|(pick, commit)| Op::Report { pick, commit }),
        1 => (1u8..4).prop_map(|ahead| Op::OrphanReport { ahead }),
        1 => Just(Op::BadReport),
        1 => (any::<u16>(), any::<u32>()).prop_map(|(pick, commit)| Op::ReportChanged { pick, commit }),
        1 => any::<u16>().prop_map(|pick| Op::Delete { pick }),
        1 => any::<u16>().prop_map(|pick| Op::SameValues { pick }),
        1 => any::<u16>().prop_map(|_| Op::Vacuum),
        1 => any::<u16>().prop_map(|_| Op::AddColumn),
    ]
}

/// What the runner does to the file between two syncs.
struct Runner {
    db: Db,
    next_id: u32,
    reports: u32,
    column_added: bool,
}

impl Runner {
    fn agents(&self) -> Vec<String> {
        self.db
            .conn
            .prepare("SELECT agent_id FROM agents ORDER BY rowid")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn apply(&mut self, op: &Op) {
        let agents = self.agents();
        let pick = |i: &u16| agents.get(*i as usize % agents.len().max(1)).cloned();
        let conn = &self.db.conn;
        self.reports += 1;
        let report = format!("r{:05}", self.reports);
        match op {
            Op::Insert { long, minute, exp } => {
                let id = format!("a{:05}", self.next_id);
                self.next_id += 1;
                let task = match long {
                    Some(len) => "t".repeat(*len as usize),
                    None => format!("task {id}"),
                };
                conn.execute(
                    "INSERT INTO agents (agent_id, vm_name, status, harness, repo_url, branch, task, started_at, finished_at, agent_name, workspace_path)
                     VALUES (?1, 'vm', 'booting', 'claude-code', 'git@x:r.git', 'main', ?2, ?3, NULL, ?4, '/ws')",
                    params![id, task, format!("2026-04-10T12:{minute:02}:00Z"), format!("e{exp}-claude-code")],
                )
                .unwrap();
            }
            Op::OrphanReport { ahead } => {
                let agent = format!("a{:05}", self.next_id + *ahead as u32 - 1);
                self.db
                    .report(&report, &agent, "c0ffee", "2026-04-11T00:00:00Z");
            }
            Op::BadReport => {
                conn.execute(
                    "INSERT INTO run_reports (report_id, agent_id, exit_status, created_at) VALUES (?1, 12345, 'completed', 'x')",
                    [&report],
                )
                .unwrap();
            }
            Op::ReportChanged { pick, commit } => {
                conn.execute(
                    "UPDATE run_reports SET commit_hash = ?1 WHERE rowid = (
                        SELECT rowid FROM run_reports ORDER BY rowid LIMIT 1
                        OFFSET ?2 % max(1, (SELECT count(*) FROM run_reports)))",
                    params![format!("{commit:08x}"), *pick as i64],
                )
                .unwrap();
            }
            Op::Vacuum => conn.execute_batch("VACUUM").unwrap(),
            Op::AddColumn if !self.column_added => {
                self.column_added = true;
                conn.execute_batch("ALTER TABLE agents ADD COLUMN note TEXT DEFAULT 'n'")
                    .unwrap();
            }
            Op::AddColumn => {}
            // The rest change an existing agent.
            Op::Status { pick: p, .. }
            | Op::TaskEnd { pick: p, .. }
            | Op::Finished { pick: p, .. }
            | Op::Report { pick: p, .. }
            | Op::Delete { pick: p }
            | Op::SameValues { pick: p } => {
                let Some(agent) = pick(p) else { return };
                match op {
                    Op::Status { status, .. } => {
                        let status = ["running", "stopped", "crashed"][*status as usize];
                        self.db.set(&agent, "status", Some(status));
                    }
                    Op::TaskEnd { letter, .. } => {
                        conn.execute(
                            "UPDATE agents SET task = substr(task, 1, length(task) - 1) || char(97 + ?1) WHERE agent_id = ?2",
                            params![*letter as i64, agent],
                        )
                        .unwrap();
                    }
                    Op::Finished { hour, .. } => {
                        let at = format!("2026-04-11T0{hour}:00:00Z");
                        self.db.set(&agent, "finished_at", Some(&at));
                    }
                    Op::Report { commit, .. } => self.db.report(
                        &report,
                        &agent,
                        &format!("{commit:08x}"),
                        "2026-04-11T00:00:00Z",
                    ),
                    Op::Delete { .. } => {
                        conn.execute("DELETE FROM agents WHERE agent_id = ?1", [&agent])
                            .unwrap();
                    }
                    _ => {
                        conn.execute(
                            "UPDATE agents SET status = status WHERE agent_id = ?1",
                            [&agent],
                        )
                        .unwrap();
                    }
                }
            }
        }
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

/// Runs `history` (one list of changes per sync) through a warm ingester
/// with page reads, a warm one with row scans, and a new ingester per sync
/// with page reads and the saved index (a new process each time). Returns
/// the first step where they differ, and the runs changed in all.
async fn check(history: &[Vec<Op>]) -> Result<usize, String> {
    let mut runner = Runner {
        db: db(&[AGENTS, REPORTS]),
        next_id: 0,
        reports: 0,
        column_added: false,
    };
    let cache = tempfile::tempdir().unwrap();
    let mut pages = RunnerConfig::new(&runner.db.path);
    pages.page_reads = true;
    let mut rows = pages.clone();
    rows.page_reads = false;
    let mut cold = pages.clone();
    cold.cache_dir = Some(cache.path().to_path_buf());
    let (first, registry) = ledger();
    let ledgers = [first, ledger().0, ledger().0];
    let mut warm_pages = RunnerIngest::new(ledgers[0].clone(), registry.clone(), pages);
    let mut warm_rows = RunnerIngest::new(ledgers[1].clone(), registry.clone(), rows);
    let mut changed = 0;
    for (step, ops) in history.iter().enumerate() {
        for op in ops {
            runner.apply(op);
        }
        let a = warm_pages.sync().await.unwrap();
        let b = warm_rows.sync().await.unwrap();
        let c = RunnerIngest::new(ledgers[2].clone(), registry.clone(), cold.clone())
            .sync()
            .await
            .unwrap();
        // Each report says which read ran: the pages, or the row scan
        // that page reads off asks for; an unchanged file is not read.
        if !matches!(a.read_path, "pages" | "unchanged")
            || !matches!(b.read_path, "rows" | "unchanged")
            || c.read_path != "pages"
        {
            return Err(format!(
                "step {step}: read paths pages {:?}, rows {:?}, cold {:?}",
                a.read_path, b.read_path, c.read_path
            ));
        }
        if counts(&a) != counts(&b) || counts(&a) != counts(&c) {
            return Err(format!(
                "step {step}: reports differ: pages {:?}, rows {:?}, cold {:?}",
                counts(&a),
                counts(&b),
                counts(&c)
            ));
        }
        let (sa, sb, sc) = (
            state(&ledgers[0]).await,
            state(&ledgers[1]).await,
            state(&ledgers[2]).await,
        );
        if sa != sb || sa != sc {
            return Err(format!("step {step}: ledgers differ"));
        }
        changed += a.runs_changed;
    }
    Ok(changed)
}

fn run(history: &[Vec<Op>]) -> Result<usize, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(check(history))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn page_reads_write_the_same_ledger_as_row_scans(
        history in prop::collection::vec(prop::collection::vec(op(), 1..25), 1..12)
    ) {
        if let Err(e) = run(&history) {
            prop_assert!(false, "{e}");
        }
    }
}

/// A long fixed history, so that the property above is known to reach
/// changed runs, spilled records, VACUUM and an added column together.
#[test]
fn a_long_history_changes_runs_and_stays_equal() {
    let mut history = Vec::new();
    for step in 0..16u16 {
        let mut ops = vec![
            Op::Insert {
                long: (step % 3 == 0).then_some(5_000 + step),
                minute: step as u8,
                exp: (step % 3) as u8,
            },
            Op::Insert {
                long: None,
                minute: 1,
                exp: 0,
            },
            Op::Status {
                pick: step * 7,
                status: (step % 3) as u8,
            },
            Op::TaskEnd {
                pick: step * 3,
                letter: step as u8,
            },
            Op::Report {
                pick: step * 5,
                commit: step as u32,
            },
            Op::ReportChanged {
                pick: step,
                commit: 99,
            },
            Op::SameValues { pick: step },
        ];
        if step % 4 == 3 {
            ops.extend([Op::Delete { pick: step }, Op::OrphanReport { ahead: 1 }]);
        }
        match step {
            5 => ops.push(Op::BadReport),
            9 => ops.push(Op::Vacuum),
            12 => ops.push(Op::AddColumn),
            _ => {}
        }
        history.push(ops);
    }
    let changed = run(&history).unwrap();
    assert!(changed > 20, "{changed} runs changed");
}
