//! Reading archetype-runner's `state.db`: read-only, in one read transaction
//! (a consistent snapshot even while the runner commits in WAL mode), with
//! row fingerprints so that a re-sync materializes only rows that changed.

//!
//! [`Source`] (`source.rs`) is the connection kept across syncs; the row
//! types and fingerprints are in `rows.rs`; [`scan`] (here) reads a
//! snapshot against the ingest's index.

mod records;
mod rows;
mod source;

pub(crate) use rows::{AGENT_COLUMNS, AgentRow, REPORT_COLUMNS, ReportRow};
pub(crate) use source::Source;

use crate::error::IngestError;
use crate::index::{Index, ReportOwner, Seen};
use crate::pages;
use rows::{fingerprint, key_text, new_agent_row, report_row};
use rusqlite::Row;
use source::{FP_FUNCTION, TableCells, check_columns, tables};
use std::collections::HashSet;

/// The rows one sync has to look at.
#[derive(Default)]
pub(crate) struct Scan {
    pub rows_read: usize,
    pub reports_read: usize,
    /// New rows, rows whose fingerprint changed, and rows whose reports
    /// changed, each with its rowid and the run last seen at that rowid.
    pub agents: Vec<(i64, Option<u32>, AgentRow)>,
    /// Rows whose fingerprint is unchanged since the last scan at the same
    /// rowid, as `(rowid, fingerprint, run slot)`.
    pub unchanged: Vec<(i64, u64, u32)>,
    /// New or changed reports, and every report of an agent in `agents`.
    pub reports: Vec<ReportRow>,
    /// Whether report fingerprints came from the pages: then the next
    /// `Index::report_rows` is `report_rows_kept` and `report_rows_read`.
    pub report_pages: bool,
    /// Report rows unchanged since the last scan, as `(rowid, fingerprint,
    /// run slot)`.
    pub report_rows_kept: Vec<(i64, u64, u32)>,
    /// Report rows read, as `(rowid, fingerprint, agent_id)` (no agent_id:
    /// a row without text ids).
    pub report_rows_read: Vec<(i64, u64, Option<String>)>,
    pub orphan_reports: Vec<(String, String)>,
    pub warnings: Vec<String>,
    /// Where the agents rows' fingerprints came from: `pages` (the table's
    /// pages, `sqlite_dbpage`) or `rows` (the SQL row-scan fallback).
    pub read_path: &'static str,
    /// Whether the rows of a first scan were decoded from the table's
    /// pages (see `records.rs`) rather than stepped through with SQL.
    pub rows_from_pages: bool,
}

/// The `Index::report_rows` code of a report row with no text report_id
/// or agent_id (skipped with a warning).
const REPORT_BAD: u32 = ReportOwner::Bad.code();

/// Walks a row index (`(rowid, fingerprint, slot)`, sorted by rowid) along
/// rows that come in rowid order, as a table scan gives them: a merge, with
/// a search only if the order breaks.
struct Cursor<'a> {
    known: &'a [(i64, u64, u32)],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn new(known: &'a [(i64, u64, u32)]) -> Self {
        Cursor { known, at: 0 }
    }

    /// The fingerprint and slot the index holds for `rowid`.
    fn find(&mut self, rowid: i64) -> Option<(u64, u32)> {
        if self.at > 0 && self.known[self.at - 1].0 >= rowid {
            self.at = self.known.partition_point(|k| k.0 < rowid);
        }
        while self.known.get(self.at).is_some_and(|k| k.0 < rowid) {
            self.at += 1;
        }
        self.known
            .get(self.at)
            .filter(|k| k.0 == rowid)
            .map(|k| (k.1, k.2))
    }
}

/// The page fingerprint of `rowid` in `cells` (sorted by rowid); 0, which
/// no fingerprint equals, when the row is not there.
fn cell_fp(cells: &pages::Cells, rowid: i64) -> u64 {
    cells
        .binary_search_by_key(&rowid, |c| c.0)
        .map_or(0, |at| cells[at].1)
}

/// The warning for agents row `rowid`, skipped for its id.
fn no_text_id(rowid: i64) -> String {
    format!("agents row {rowid} has no text agent_id (NULL, empty, a number or a blob): skipped")
}

/// The warning for run_reports row `rowid`, skipped for its ids.
fn bad_report_row(rowid: i64) -> String {
    format!(
        "run_reports row {rowid} has no text report_id or agent_id (NULL, empty, a number or a blob): skipped"
    )
}

/// What reading report rows needs.
struct Reports<'a> {
    index: &'a Index,
    /// agent_ids of the new agents rows read.
    candidates: &'a HashSet<String>,
    /// agent_ids whose row must be read for a changed report.
    refetch: &'a mut HashSet<String>,
    buf: &'a mut Vec<u8>,
}

impl Reports<'_> {
    /// Takes one report row (its columns, then its rowid) into `out`.
    /// `page_fp`: its fingerprint from the pages, else computed here.
    fn take(
        &mut self,
        out: &mut Scan,
        row: &Row<'_>,
        page_fp: Option<u64>,
    ) -> rusqlite::Result<()> {
        let rowid: i64 = row.get(REPORT_COLUMNS.len())?;
        let (Some(report_id), Some(agent_id)) = (key_text(row, 0)?, key_text(row, 1)?) else {
            out.warnings.push(bad_report_row(rowid));
            if let Some(fp) = page_fp {
                out.report_rows_read.push((rowid, fp, None));
            }
            return Ok(());
        };
        if let Some(fp) = page_fp {
            out.report_rows_read
                .push((rowid, fp, Some(agent_id.to_string())));
        }
        let index = self.index;
        let candidate = self.candidates.contains(agent_id);
        let in_file = candidate || index.slot(agent_id).is_some_and(|s| index.seen.contains(s));
        if !in_file {
            out.orphan_reports
                .push((report_id.to_string(), agent_id.to_string()));
            return Ok(());
        }
        let fp = match page_fp {
            Some(fp) => fp,
            None => fingerprint(row, REPORT_COLUMNS.len(), self.buf)?,
        };
        let changed = index.reports.get(report_id).is_none_or(|f| *f != fp);
        if changed || candidate {
            if changed && !candidate {
                self.refetch.insert(agent_id.to_string());
            }
            out.reports.push(report_row(row, fp)?);
        }
        Ok(())
    }
}

/// Reads agents row `row` (its rowid first) into `out`, or a warning when
/// it has no text agent_id. Without `buf` its fingerprint is left 0 for
/// the caller to fill in.
fn take_agent(
    out: &mut Scan,
    candidates: Option<&mut HashSet<String>>,
    row: &Row<'_>,
    hint: Option<u32>,
    buf: Option<&mut Vec<u8>>,
) -> rusqlite::Result<()> {
    let rowid: i64 = row.get(0)?;
    match key_text(row, 1)? {
        Some(id) => {
            if let Some(c) = candidates {
                c.insert(id.to_string());
            }
            out.agents.push((rowid, hint, new_agent_row(row, 1, buf)?));
        }
        None => out.warnings.push(no_text_id(rowid)),
    }
    Ok(())
}

/// Reads the database against `index`: marks rows seen, and returns the
/// rows that may need writing. With a row index from an earlier scan, only
/// each row's rowid and fingerprint are read (the hash of its record bytes
/// from the table's pages, see [`crate::pages`]; else of its values,
/// computed inside SQLite), and changed rows are fetched by rowid; without
/// one, every row is read.
/// Blocking; call it off the async executor.
pub(crate) fn scan(source: &mut Source, index: &mut Index) -> Result<Scan, IngestError> {
    let path = source.path.clone();
    let path = path.as_path();
    let err = |e| IngestError::sqlite(path, e);
    // One read transaction: both tables from the same committed state.
    let tx = source.conn.unchecked_transaction().map_err(err)?;
    let names = tables(&tx).map_err(err)?;
    // Read inside the transaction: the version of the snapshot scanned.
    let version = source.data_version().map_err(err)?;
    if !names.contains("agents") {
        return Err(IngestError::NoAgentsTable {
            path: path.to_path_buf(),
        });
    }
    check_columns(&tx, path, "agents", &AGENT_COLUMNS)?;
    let has_reports = names.contains("run_reports");
    if has_reports {
        check_columns(&tx, path, "run_reports", &REPORT_COLUMNS)?;
    }
    let mut out = Scan::default();
    let mut buf = Vec::with_capacity(512);
    // Agents of the rows materialized: their reports are all needed.
    let mut candidates: HashSet<String> = HashSet::new();
    let columns = AGENT_COLUMNS.join(", ");

    // Each row's fingerprint: the hash of its record bytes, read from the
    // table's pages when SQLite offers them, else of its values.
    let TableCells {
        agents: cells,
        reports: report_cells,
    } = match source.prefetched.take() {
        // Nobody committed since the prefetch: its cells are this snapshot's.
        Some((v, cells)) if v == version => cells,
        _ if source.pages => TableCells::read(&tx, &mut source.tree).map_err(err)?,
        _ => TableCells::default(),
    };
    out.read_path = if cells.is_some() { "pages" } else { "rows" };
    // A first scan reads every row: from the pages just read when they
    // give exactly what SQL gives.
    let from_pages = match (&cells, &source.tree) {
        (Some(cells), Some(tree)) if index.by_rowid.is_empty() => {
            match records::Layout::of(&tx).map_err(err)? {
                Some(layout) => records::agents(&tx, tree, cells, &layout).map_err(err)?,
                None => None,
            }
        }
        _ => None,
    };
    if let Some(rows) = from_pages {
        out.rows_from_pages = true;
        out.rows_read = rows.len();
        out.agents.reserve_exact(rows.len());
        for (rowid, row) in rows {
            match row {
                Some(row) => {
                    if has_reports && let Some(id) = row.get(0) {
                        candidates.insert(id.to_string());
                    }
                    out.agents.push((rowid, None, row));
                }
                None => out.warnings.push(no_text_id(rowid)),
            }
        }
    } else if index.by_rowid.is_empty() {
        let sql = format!("SELECT rowid, {columns} FROM agents");
        let mut stmt = tx.prepare_cached(&sql).map_err(err)?;
        let mut rows = stmt.query([]).map_err(err)?;
        // The pages give every row's fingerprint: the rows' own are not
        // computed, and their count sizes the list once.
        if let Some(cells) = &cells {
            out.agents.reserve_exact(cells.len());
        }
        let row_fps = cells.is_none();
        while let Some(row) = rows.next().map_err(err)? {
            out.rows_read += 1;
            take_agent(
                &mut out,
                has_reports.then_some(&mut candidates),
                row,
                None,
                row_fps.then_some(&mut buf),
            )
            .map_err(err)?;
        }
        if let Some(cells) = &cells {
            for (rowid, _, agent) in &mut out.agents {
                agent.fp = cell_fp(cells, *rowid);
            }
        }
    } else {
        let mut changed: Vec<(i64, Option<u32>, u64)> = Vec::new();
        out.unchanged.reserve(index.by_rowid.len());
        let mut known = Cursor::new(&index.by_rowid);
        let mut visit = |rowid: i64, fp: u64| {
            out.rows_read += 1;
            match known.find(rowid) {
                Some((f, slot)) if f == fp => {
                    index.seen.mark(slot);
                    out.unchanged.push((rowid, fp, slot));
                }
                Some((_, slot)) => changed.push((rowid, Some(slot), fp)),
                None => changed.push((rowid, None, fp)),
            }
        };
        match &cells {
            Some(cells) => cells.iter().for_each(|&(rowid, fp)| visit(rowid, fp)),
            None => {
                let sql = format!("SELECT rowid, {FP_FUNCTION}({columns}) FROM agents");
                let mut stmt = tx.prepare_cached(&sql).map_err(err)?;
                let mut rows = stmt.query([]).map_err(err)?;
                while let Some(row) = rows.next().map_err(err)? {
                    let rowid: i64 = row.get(0).map_err(err)?;
                    visit(rowid, row.get::<_, i64>(1).map_err(err)? as u64);
                }
            }
        }
        let sql = format!("SELECT rowid, {columns} FROM agents WHERE rowid = ?1");
        let mut stmt = tx.prepare_cached(&sql).map_err(err)?;
        for (rowid, hint, fp) in changed {
            let mut rows = stmt.query([rowid]).map_err(err)?;
            if let Some(row) = rows.next().map_err(err)? {
                let before = out.agents.len();
                take_agent(
                    &mut out,
                    has_reports.then_some(&mut candidates),
                    row,
                    hint,
                    // The fingerprint read above is the row's.
                    None,
                )
                .map_err(err)?;
                if let Some((_, _, agent)) = out.agents.get_mut(before) {
                    agent.fp = fp;
                }
            }
        }
    }
    // Rows fetched for a known agent mark it seen; their reports are all
    // needed (`materialized`, as `candidates` holds the new agents').
    let mut materialized = Seen::default();
    for (_, hint, agent) in &out.agents {
        if let Some(slot) = agent.get(0).and_then(|id| index.slot_hinted(id, *hint)) {
            index.seen.mark(slot);
            materialized.mark(slot);
        }
    }

    if has_reports {
        let mut refetch: HashSet<String> = HashSet::new();
        let cols = REPORT_COLUMNS.join(", ");
        let mut reports = Reports {
            index,
            candidates: &candidates,
            refetch: &mut refetch,
            buf: &mut buf,
        };
        out.report_pages = report_cells.is_some();
        match &report_cells {
            Some(cells) if !reports.index.report_rows.is_empty() => {
                // Unchanged rows of agents still in the file (and not read
                // again) are all that is skipped.
                let mut fetch: Vec<(i64, u64)> = Vec::new();
                let mut known = Cursor::new(&reports.index.report_rows);
                for &(rowid, fp) in cells {
                    out.reports_read += 1;
                    match known.find(rowid) {
                        Some((f, REPORT_BAD)) if f == fp => {
                            out.warnings.push(bad_report_row(rowid));
                            out.report_rows_kept.push((rowid, fp, REPORT_BAD));
                        }
                        Some((f, slot))
                            if f == fp
                                && ReportOwner::of_code(slot) != ReportOwner::Orphan
                                && reports.index.seen.contains(slot)
                                && !materialized.contains(slot) =>
                        {
                            out.report_rows_kept.push((rowid, fp, slot));
                        }
                        _ => fetch.push((rowid, fp)),
                    }
                }
                let sql = format!("SELECT {cols}, rowid FROM run_reports WHERE rowid = ?1");
                let mut stmt = tx.prepare_cached(&sql).map_err(err)?;
                for (rowid, fp) in fetch {
                    let mut rows = stmt.query([rowid]).map_err(err)?;
                    if let Some(row) = rows.next().map_err(err)? {
                        reports.take(&mut out, row, Some(fp)).map_err(err)?;
                    }
                }
            }
            cells => {
                let sql = format!("SELECT {cols}, rowid FROM run_reports");
                let mut stmt = tx.prepare_cached(&sql).map_err(err)?;
                let mut rows = stmt.query([]).map_err(err)?;
                while let Some(row) = rows.next().map_err(err)? {
                    out.reports_read += 1;
                    let fp = match cells {
                        Some(cells) => {
                            let rowid: i64 = row.get(REPORT_COLUMNS.len()).map_err(err)?;
                            Some(cell_fp(cells, rowid))
                        }
                        None => None,
                    };
                    reports.take(&mut out, row, fp).map_err(err)?;
                }
            }
        }
        if !refetch.is_empty() {
            let sql = format!("SELECT rowid, {columns} FROM agents WHERE agent_id = ?1");
            let mut stmt = tx.prepare_cached(&sql).map_err(err)?;
            let mut refetch: Vec<String> = refetch.into_iter().collect();
            refetch.sort();
            let mut fetched: HashSet<i64> = HashSet::new();
            for id in refetch {
                let mut rows = stmt.query([&id]).map_err(err)?;
                if let Some(row) = rows.next().map_err(err)? {
                    let rowid: i64 = row.get(0).map_err(err)?;
                    let row_fp = cells.is_none().then_some(&mut buf);
                    let mut agent = new_agent_row(row, 1, row_fp).map_err(err)?;
                    if let Some(cells) = &cells {
                        agent.fp = cell_fp(cells, rowid);
                    }
                    fetched.insert(rowid);
                    out.agents.push((rowid, None, agent));
                }
            }
            // Those rows are materialized now, not kept as unchanged.
            out.unchanged.retain(|u| !fetched.contains(&u.0));
        }
    }
    drop(tx);
    source.version = Some(version);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::TrackedRun;
    use autoresearch_core::EntityId;
    use rusqlite::Connection;
    use std::path::PathBuf;

    /// A WAL runner file with `n` agents, and a connection that writes it.
    fn runner_file(n: usize) -> (tempfile::TempDir, PathBuf, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "wal").unwrap();
        conn.execute_batch(&format!(
            "CREATE TABLE agents ({})",
            AGENT_COLUMNS.map(|c| format!("{c} TEXT")).join(", ")
        ))
        .unwrap();
        for i in 0..n {
            conn.execute(
                "INSERT INTO agents (agent_id, status) VALUES (?1, 'running')",
                [format!("a{i}")],
            )
            .unwrap();
        }
        (dir, path, conn)
    }

    /// An index that knows every row with the fingerprints `cells` give.
    fn index_of(cells: &pages::Cells) -> Index {
        let mut index = Index::default();
        for (i, (rowid, fp)) in cells.iter().enumerate() {
            index.push(TrackedRun {
                agent_id: format!("a{}", rowid - 1),
                entity: EntityId(i as u64),
                run_hash: 0,
                commit_hash: String::new(),
                report: None,
            });
            index.by_rowid.push((*rowid, *fp, i as u32));
        }
        index.seen.reset(index.runs.len());
        index
    }

    #[test]
    fn prefetched_pages_are_used_only_for_the_snapshot_they_were_read_in() {
        for commit_between in [false, true] {
            let (_dir, path, writer) = runner_file(50);
            let mut source = Source::open(&path, true).unwrap();
            assert!(source.pages, "this build has sqlite_dbpage");
            source.prefetch_pages();
            let prefetched = source
                .prefetched
                .as_ref()
                .unwrap()
                .1
                .agents
                .clone()
                .unwrap();
            assert_eq!(prefetched.len(), 50);
            let mut index = index_of(&prefetched);
            if commit_between {
                writer
                    .execute(
                        "UPDATE agents SET status = 'stopped' WHERE agent_id = 'a7'",
                        [],
                    )
                    .unwrap();
            }
            let scan = scan(&mut source, &mut index).unwrap();
            // Consumed either way: never used for a later scan.
            assert!(source.prefetched.is_none());
            let read: Vec<i64> = scan.agents.iter().map(|a| a.0).collect();
            if commit_between {
                // The row changed after the prefetch is read, not taken
                // as unchanged from the stale cells.
                assert_eq!(read, [8]);
                assert_eq!(scan.agents[0].2.get(2), Some("stopped"));
            } else {
                assert!(read.is_empty());
            }
            assert_eq!(scan.unchanged.len(), 50 - read.len());
        }
    }
}
