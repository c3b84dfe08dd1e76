//! Turning the rows of one scan into the changes of one tick: each row's
//! run built and encoded (borrowing the row's text), compared with the
//! index by value hash, and buffered into the writer.

use super::{RunnerConfig, SyncReport, experiment_from_agent_name};
use crate::index::{Index, ReportOwner, StoredReport, TrackedRun, value_hash};
use crate::report::RunReport;
use crate::statedb::{self, AgentRow, ReportRow, Scan};
use crate::time::{self, Timestamp};
use autoresearch_core::{Run, RunRef, TickWriter};
use std::collections::HashMap;

fn report_from_row(row: &ReportRow, report: &mut SyncReport) -> RunReport {
    let created = time::parse(row.get(9));
    let report_id = row.text(0);
    if created == Timestamp::Invalid {
        report.warn(format!(
            "report {report_id}: unparseable created_at {:?} left at 0",
            row.text(9)
        ));
    }
    RunReport {
        report_id,
        run_id: row.text(1),
        request_id: row.text(2),
        exit_status: row.text(3),
        commit_hash: row.text(4),
        diff_stat: row.text(5),
        stdout_tail: row.text(6),
        stderr_tail: row.text(7),
        metadata_json: row.get(8).unwrap_or("{}").to_string(),
        created_at_ms: created.ms(),
    }
}

/// A row (borrowed from the scan, not moved) with what parsing it found:
/// its times and their warnings.
struct Built<'r> {
    row: &'r AgentRow,
    started_at_ms: i64,
    finished_at_ms: i64,
    naive: usize,
    warnings: Vec<String>,
}

/// A row's run encoded ahead (beside the building of the rows) with the
/// commit it would most likely get: its newest report's. [`apply`] uses
/// it only when the commit it settles on is that one, so the bytes are
/// those it would encode.
struct Encoded {
    /// The commit the run was encoded with.
    commit: String,
    bytes: Vec<u8>,
    hash: u64,
}

/// [`Encoded`] for `b`, with the commit of `latest`'s report of its
/// run (empty when none names one); `None` when it does not encode (the
/// error is met again, in order, by [`apply`]).
fn encode_ahead(
    b: &Built<'_>,
    config: &RunnerConfig,
    latest: &HashMap<String, RunReport>,
    scratch: &mut Vec<u8>,
) -> Option<Encoded> {
    let commit = latest
        .get(b.run_id())
        .map(|r| r.commit_hash.as_str())
        .unwrap_or_default();
    let bytes = encode_run(&b.view(config, commit), scratch).ok()?;
    Some(Encoded {
        commit: commit.to_string(),
        hash: value_hash(&bytes),
        bytes,
    })
}

fn build_run(row: &AgentRow) -> Built<'_> {
    let agent_id = row.get(0).unwrap_or_default();
    let mut naive = 0;
    let mut warnings = Vec::new();
    let mut ms = |col: usize| {
        let t = time::parse(row.get(col));
        match t {
            Timestamp::Naive(_) => naive += 1,
            Timestamp::Invalid => warnings.push(format!(
                "agent {agent_id}: unparseable {} {:?} left at 0",
                statedb::AGENT_COLUMNS[col],
                row.text(col)
            )),
            _ => {}
        }
        t.ms()
    };
    let started_at_ms = ms(7);
    let finished_at_ms = ms(8);
    Built {
        row,
        started_at_ms,
        finished_at_ms,
        naive,
        warnings,
    }
}

impl Built<'_> {
    fn run_id(&self) -> &str {
        self.row.get(0).unwrap_or_default()
    }

    /// The run this row gives, borrowing its text.
    fn view<'a>(&'a self, config: &'a RunnerConfig, commit_hash: &'a str) -> RunRef<'a> {
        let row = &self.row;
        let harness = row.get(3).unwrap_or_default();
        let agent_name = row.get(9).unwrap_or_default();
        let experiment_name = match &config.experiment {
            Some(e) => e.as_str(),
            None => experiment_from_agent_name(agent_name, harness).unwrap_or("adhoc"),
        };
        RunRef {
            run_id: self.run_id(),
            experiment_name,
            vm_name: row.get(1).unwrap_or_default(),
            status: row.get(2).unwrap_or("booting"),
            harness,
            repo_url: row.get(4).unwrap_or_default(),
            branch: row.get(5).unwrap_or("main"),
            task: row.get(6).unwrap_or_default(),
            started_at_ms: self.started_at_ms,
            finished_at_ms: self.finished_at_ms,
            agent_name,
            workspace_path: row.get(10).unwrap_or_default(),
            commit_hash,
        }
    }
}

/// Rows from this many on are built on two threads (their timestamps
/// parsed); starting a thread costs tens of microseconds.
const PARALLEL_FROM: usize = 1_024;

type Rows = [(i64, Option<u32>, AgentRow)];

/// A row's rowid, run hint, the row built and its run encoded ahead.
type BuiltRow<'r> = (i64, Option<u32>, Built<'r>, Option<Encoded>);

/// Each row built ([`build_run`]) and its run encoded ahead
/// ([`encode_ahead`]), in order: on this thread and a scoped one for
/// many rows (the same result), on this one alone when no thread can be
/// started.
fn build_runs<'r>(
    rows: &'r Rows,
    config: &RunnerConfig,
    latest: &HashMap<String, RunReport>,
) -> Vec<BuiltRow<'r>> {
    let part = |rows: &'r Rows| -> Vec<BuiltRow<'r>> {
        let mut scratch = Vec::with_capacity(512);
        rows.iter()
            .map(|(rowid, hint, r)| {
                let b = build_run(r);
                let encoded = encode_ahead(&b, config, latest, &mut scratch);
                (*rowid, *hint, b, encoded)
            })
            .collect()
    };
    if rows.len() < PARALLEL_FROM {
        return part(rows);
    }
    let (first, second) = rows.split_at(rows.len() / 2);
    std::thread::scope(|s| {
        let apart = std::thread::Builder::new()
            .name("runner-build".into())
            .spawn_scoped(s, || part(second));
        let mut built = Vec::with_capacity(rows.len());
        built.extend(part(first));
        match apart.map(|h| h.join()) {
            Ok(Ok(rest)) => built.extend(rest),
            // A panic there is one here, as without the thread.
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => built.extend(part(second)),
        }
        built
    })
}

/// The encoding of `run` (exactly the bytes of the `Run` it stands for:
/// [`RunRef`] has `Run`'s fields in `Run`'s order), written into `scratch`
/// and returned exactly sized.
fn encode_run(
    run: &RunRef<'_>,
    scratch: &mut Vec<u8>,
) -> Result<Vec<u8>, autoresearch_core::Error> {
    scratch.clear();
    let taken = std::mem::take(scratch);
    let out = postcard::to_extend(run, taken).map_err(|source| {
        autoresearch_core::Error::Registry(autoresearch_core::RegistryError::Encode {
            component: "Run".to_string(),
            source,
        })
    })?;
    *scratch = out;
    Ok(scratch.clone())
}

/// Buffers the changes of one sync into `writer` and updates `index`.
/// Runs are encoded from their rows through [`RunRef`]: no owned `Run`
/// is built.
/// `idle` receives what a sync of the same, unchanged file would report.
pub(super) fn apply(
    writer: &mut TickWriter,
    index: &mut Index,
    scan: Scan,
    config: &RunnerConfig,
    report: &mut SyncReport,
    idle: &mut SyncReport,
) -> Result<(), autoresearch_core::Error> {
    report.rows_read = scan.rows_read;
    report.reports_read = scan.reports_read;
    for w in scan.warnings {
        report.warn(w);
    }
    for (report_id, agent_id) in &scan.orphan_reports {
        report.orphan_reports += 1;
        report.warn(format!(
            "report {report_id}: agent {agent_id} has no agents row; report not ingested"
        ));
    }
    *idle = report.clone();

    // The latest report per agent among the rows read, and report fingerprints.
    let mut latest: HashMap<String, RunReport> = HashMap::new();
    let mut report_fps: Vec<(String, String, u64)> = Vec::new();
    for row in &scan.reports {
        let rep = report_from_row(row, report);
        report_fps.push((rep.report_id.clone(), rep.run_id.clone(), row.fp));
        match latest.get(&rep.run_id) {
            Some(cur) if cur.order_key() >= rep.order_key() => {}
            _ => {
                latest.insert(rep.run_id.clone(), rep);
            }
        }
    }

    let mut built = build_runs(&scan.agents, config, &latest);
    let mut ahead: Vec<Option<Encoded>> = built.iter_mut().map(|b| b.3.take()).collect();
    // New runs are spawned in start order, as the reference loader reads them.
    // Sort positions, not the rows themselves.
    let mut keys: Vec<(i64, &str, usize)> = built
        .iter()
        .enumerate()
        .map(|(i, (_, _, b, _))| (b.started_at_ms, b.run_id(), i))
        .collect();
    keys.sort_unstable();
    let order: Vec<usize> = keys.into_iter().map(|(_, _, i)| i).collect();
    let mut by_rowid = scan.unchanged;
    // Sized once for every row to write: a spawn and a run each (a report
    // more grows it), rather than doubling a first ingest's tick a score
    // of times.
    by_rowid.reserve(built.len());
    writer.reserve(2 * built.len());
    index.reserve(built.len());
    let run_component = writer.registry().name_of::<Run>()?.to_string();
    let registry = writer.registry().clone();
    let mut scratch = Vec::with_capacity(512);
    for (i, (rowid, hint, b, _)) in order.into_iter().map(|i| (i, &built[i])) {
        let run_id = b.run_id();
        let slot = index.slot_hinted(run_id, *hint);
        let stored = slot.map(|s| &index.runs[s as usize]);
        let stored_report = stored.and_then(|s| s.report.as_ref());
        let new_report = match (latest.remove(run_id), stored_report) {
            (Some(n), Some(s)) if s.order_key() > n.order_key() => None,
            (n, _) => n,
        };
        // The commit of the newest report that names one, else the stored run's.
        let best = match (&new_report, stored_report) {
            (Some(n), _) => Some(n.commit_hash.as_str()),
            (None, s) => s.map(|s| s.commit_hash.as_str()),
        };
        let commit_hash = match best.filter(|c| !c.is_empty()) {
            Some(c) => c.to_string(),
            None => stored.map(|s| s.commit_hash.clone()).unwrap_or_default(),
        };
        let new_report = match new_report {
            Some(r) => {
                let hash = value_hash(&registry.encode(&r)?.1);
                let changed = stored_report.is_none_or(|s| s.hash != hash);
                changed.then_some((r, hash))
            }
            None => None,
        };
        // Encoded ahead with this commit: the same bytes.
        let (bytes, run_hash) = match ahead[i].take() {
            Some(e) if e.commit == commit_hash => (e.bytes, e.hash),
            _ => {
                let bytes = encode_run(&b.view(config, &commit_hash), &mut scratch)?;
                let run_hash = value_hash(&bytes);
                (bytes, run_hash)
            }
        };
        let (slot, run_written) = match slot {
            Some(slot) => {
                let t = &mut index.runs[slot as usize];
                let changed = t.run_hash != run_hash;
                if changed {
                    writer.set_encoded(t.entity, run_component.clone(), bytes);
                    report.runs_changed += 1;
                }
                t.run_hash = run_hash;
                t.commit_hash = commit_hash;
                index.seen.mark(slot);
                (slot, changed)
            }
            None => {
                let entity = writer.spawn();
                writer.set_encoded(entity, run_component.clone(), bytes);
                report.runs_added += 1;
                let slot = index.push(TrackedRun {
                    agent_id: run_id.to_string(),
                    entity,
                    run_hash,
                    commit_hash,
                    report: None,
                });
                index.seen.mark(slot);
                (slot, true)
            }
        };
        if let Some((r, hash)) = new_report {
            let t = &mut index.runs[slot as usize];
            writer.set(t.entity, &r)?;
            report.reports_attached += 1;
            t.report = Some(StoredReport {
                created_at_ms: r.created_at_ms,
                report_id: r.report_id,
                commit_hash: r.commit_hash,
                hash,
            });
        }
        if run_written {
            report.timestamps_without_offset += b.naive;
            for w in &b.warnings {
                report.warn(w.clone());
            }
        }
        by_rowid.push((*rowid, b.row.fp, slot));
    }
    for (report_id, agent_id, fp) in report_fps {
        if index.slot(&agent_id).is_some() {
            index.reports.insert(report_id, fp);
        }
    }
    // Two sorted runs (the unchanged rows, then the rows written): the
    // stable sort merges them in one pass.
    by_rowid.sort_by_key(|r| r.0);
    index.by_rowid = by_rowid;
    report.runs_missing = index.runs.len() - index.seen.len();
    // The report rows as read, each with its agent's run as it is now.
    if scan.report_pages {
        let mut rows = scan.report_rows_kept;
        rows.extend(scan.report_rows_read.into_iter().map(|(rowid, fp, agent)| {
            let slot = match agent {
                None => ReportOwner::Bad.code(),
                Some(id) => index.slot(&id).unwrap_or(ReportOwner::Orphan.code()),
            };
            (rowid, fp, slot)
        }));
        rows.sort_by_key(|r| r.0);
        index.report_rows = rows;
    } else {
        index.report_rows.clear();
    }
    idle.runs_missing = report.runs_missing;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows built on two threads equal rows built one by one: the same
    /// rows in the same order, the same times, naive counts and warnings,
    /// and each run encoded ahead as `encode_run` encodes it with the
    /// commit of its newest report (empty without one).
    #[test]
    fn rows_built_on_two_threads_equal_rows_built_in_turn() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(&format!(
            "CREATE TABLE agents ({})",
            statedb::AGENT_COLUMNS
                .map(|c| format!("{c} TEXT"))
                .join(", ")
        ))
        .unwrap();
        let times = [
            Some("2026-04-01T10:00:00+02:00"),
            Some("2026-04-01 10:00:00"),
            Some("not a time"),
            None,
            Some("2026-04-02T23:59:00.250Z"),
        ];
        let n = PARALLEL_FROM + 477;
        for i in 0..n {
            conn.execute(
                "INSERT INTO agents (agent_id, status, started_at, finished_at)
                 VALUES (?1, 'running', ?2, ?3)",
                rusqlite::params![format!("a{i}"), times[i % 5], times[(i / 5) % 5]],
            )
            .unwrap();
        }
        drop(conn);
        let mut source = statedb::Source::open(&path, false).unwrap();
        let scan = statedb::scan(&mut source, &mut Index::default()).unwrap();
        assert_eq!(scan.agents.len(), n);
        let key = |b: &BuiltRow<'_>| {
            let r = &b.2;
            (
                b.0,
                b.1,
                r.run_id().to_string(),
                r.started_at_ms,
                r.finished_at_ms,
                r.naive,
                r.warnings.clone(),
                b.3.as_ref()
                    .map(|e| (e.commit.clone(), e.bytes.clone(), e.hash)),
            )
        };
        let config = RunnerConfig::new(&path);
        // Every seventh run has a report naming a commit.
        let latest: HashMap<String, RunReport> = (0..n)
            .step_by(7)
            .map(|i| {
                let report = RunReport {
                    report_id: format!("r{i}"),
                    run_id: format!("a{i}"),
                    commit_hash: format!("{i:040x}"),
                    ..RunReport::default()
                };
                (report.run_id.clone(), report)
            })
            .collect();
        let parallel: Vec<_> = build_runs(&scan.agents, &config, &latest)
            .iter()
            .map(key)
            .collect();
        let mut scratch = Vec::new();
        let in_turn: Vec<_> = scan
            .agents
            .iter()
            .map(|(rowid, hint, r)| {
                let b = build_run(r);
                let commit = latest
                    .get(b.run_id())
                    .map_or("", |r| r.commit_hash.as_str());
                let bytes = encode_run(&b.view(&config, commit), &mut scratch).unwrap();
                let encoded = Encoded {
                    commit: commit.to_string(),
                    hash: value_hash(&bytes),
                    bytes,
                };
                key(&(*rowid, *hint, b, Some(encoded)))
            })
            .collect();
        assert_eq!(parallel, in_turn);
        assert!(
            in_turn
                .iter()
                .any(|k| k.7.as_ref().is_some_and(|e| !e.0.is_empty()))
        );
        assert!(in_turn.iter().any(|k| k.5 > 0) && in_turn.iter().any(|k| !k.6.is_empty()));
    }

    #[test]
    fn a_run_view_encodes_exactly_as_its_run() {
        let registry = crate::registry();
        let mut scratch = Vec::new();
        for (i, text) in ["", "a", "ü-ñ 🚀", &"x".repeat(300)]
            .into_iter()
            .enumerate()
        {
            let view = RunRef {
                run_id: text,
                experiment_name: "exp",
                vm_name: text,
                status: "running",
                harness: "claude-code",
                repo_url: text,
                branch: "main",
                task: text,
                started_at_ms: -(i as i64) * 1_000_000_007,
                finished_at_ms: i64::MAX - i as i64,
                agent_name: text,
                workspace_path: "/ws",
                commit_hash: text,
            };
            let (name, expected) = registry.encode(&view.to_run()).unwrap();
            assert_eq!(name, "Run");
            assert_eq!(
                encode_run(&view, &mut scratch).unwrap(),
                expected,
                "case {i}"
            );
        }
    }
}
