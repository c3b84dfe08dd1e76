//! Reading archetype-runner's `state.db`: read-only, in one read transaction
//! (a consistent snapshot even while the runner commits in WAL mode), with
//! row fingerprints so that a re-sync materializes only rows that changed.

use crate::error::IngestError;
use crate::index::{Index, ReportOwner, Seen};
use crate::pages;
use rusqlite::functions::FunctionFlags;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, Row};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How much of a runner database is read through a memory map.
const MMAP_SIZE: u64 = 1 << 30;

/// How long a read waits for a lock the runner holds (WAL readers rarely wait).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) const AGENT_COLUMNS: [&str; 11] = [
    "agent_id",
    "vm_name",
    "status",
    "harness",
    "repo_url",
    "branch",
    "task",
    "started_at",
    "finished_at",
    "agent_name",
    "workspace_path",
];

pub(crate) const REPORT_COLUMNS: [&str; 10] = [
    "report_id",
    "agent_id",
    "request_id",
    "exit_status",
    "commit_hash",
    "diff_stat",
    "stdout_tail",
    "stderr_tail",
    "metadata_json",
    "created_at",
];

/// One `agents` row, as text (NULL kept as `None`): the columns one after
/// another in one string (one allocation per row, not one per column).
#[derive(Clone, Debug)]
pub(crate) struct AgentRow {
    text: String,
    /// Where each column is in `text`; `None` for NULL.
    spans: [Option<(u32, u32)>; 11],
    pub fp: u64,
}

impl AgentRow {
    pub fn get(&self, i: usize) -> Option<&str> {
        self.spans[i].map(|(a, b)| &self.text[a as usize..b as usize])
    }
    pub fn text(&self, i: usize) -> String {
        self.get(i).unwrap_or_default().to_string()
    }
}

/// One `run_reports` row, as text.
#[derive(Clone, Debug)]
pub(crate) struct ReportRow {
    pub cols: [Option<String>; 10],
    pub fp: u64,
}

impl ReportRow {
    pub fn get(&self, i: usize) -> Option<&str> {
        self.cols[i].as_deref()
    }
    pub fn text(&self, i: usize) -> String {
        self.cols[i].clone().unwrap_or_default()
    }
}

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
}

/// The page cells of the two tables a sync reads (see [`crate::pages`]).
#[derive(Default)]
pub(crate) struct TableCells {
    agents: Option<pages::Cells>,
    reports: Option<pages::Cells>,
}

impl TableCells {
    /// Reads both tables' cells in the current read transaction.
    fn read(conn: &Connection, tree: &mut Option<pages::Tree>) -> rusqlite::Result<TableCells> {
        let mut cells = pages::tables_cells(conn, &["agents", "run_reports"], tree)?;
        let reports = cells.pop().flatten();
        Ok(TableCells {
            agents: cells.pop().flatten(),
            reports,
        })
    }
}

/// The `Index::report_rows` code of a report row with no text report_id
/// or agent_id (skipped with a warning).
const REPORT_BAD: u32 = ReportOwner::Bad.code();

/// The SQL function that fingerprints its arguments as the reader does.
const FP_FUNCTION: &str = "autoresearch_row_fp";

/// An open read-only connection to a runner database, kept across syncs.
pub(crate) struct Source {
    conn: Connection,
    path: PathBuf,
    /// Which file the connection reads (a replaced file needs a new one).
    identity: Option<(u64, u64)>,
    /// `PRAGMA data_version` after the last complete scan.
    version: Option<i64>,
    /// Whether row fingerprints can be read from the table's pages
    /// (`sqlite_dbpage`, see [`crate::pages`]).
    pages: bool,
    /// What the last read of the pages parsed.
    tree: Option<pages::Tree>,
    /// Cells read by [`Source::prefetch_pages`], with the `data_version`
    /// they hold for.
    prefetched: Option<(i64, TableCells)>,
}

/// The device and inode of `path`: a file replaced under the same name
/// (a new runner database) has a new identity.
fn identity(path: &Path) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

impl Source {
    /// Opens `path` read-only. A WAL database in a directory the reader
    /// cannot write (no `-shm` to create) is opened as immutable instead:
    /// nobody can be writing it there either.
    /// With `page_reads`, row fingerprints come from the table's pages when
    /// SQLite offers them (see [`crate::pages`]).
    pub fn open(path: &Path, page_reads: bool) -> Result<Source, IngestError> {
        if !path.is_file() {
            return Err(IngestError::Missing {
                path: path.to_path_buf(),
            });
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let conn =
            Connection::open_with_flags(path, flags).map_err(|e| IngestError::sqlite(path, e))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| IngestError::sqlite(path, e))?;
        let conn = match tables(&conn) {
            Ok(_) => conn,
            Err(e) if is_cant_open(&e) => {
                let uri = format!("file:{}?immutable=1", uri_escape(path));
                Connection::open_with_flags(uri, flags).map_err(|e| IngestError::sqlite(path, e))?
            }
            Err(e) => return Err(IngestError::sqlite(path, e)),
        };
        // Pages read through a memory map instead of a read call each: a
        // re-sync reads every page of the table (see `pages`).
        conn.execute_batch(&format!("PRAGMA mmap_size = {MMAP_SIZE}"))
            .map_err(|e| IngestError::sqlite(path, e))?;
        // Fingerprints computed inside SQLite: an unchanged row costs one
        // call instead of a column read per column.
        let mut buf = Vec::with_capacity(512);
        conn.create_scalar_function(
            FP_FUNCTION,
            -1,
            FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
            move |ctx| {
                buf.clear();
                for i in 0..ctx.len() {
                    encode(ctx.get_raw(i), &mut buf);
                }
                Ok(digest(&buf) as i64)
            },
        )
        .map_err(|e| IngestError::sqlite(path, e))?;
        Ok(Source {
            pages: page_reads && pages::available(&conn),
            tree: None,
            prefetched: None,
            conn,
            path: path.to_path_buf(),
            identity: identity(path),
            version: None,
        })
    }

    /// Reads and parses the tables' pages in a read transaction of
    /// its own, so that the next [`scan`] (its own snapshot) parses only
    /// the pages that changed in between. Meant to run while something
    /// else (loading the index) is under way; any error is left for the
    /// scan to meet and report.
    pub fn prefetch_pages(&mut self) {
        if !self.pages {
            return;
        }
        let Ok(tx) = self.conn.unchecked_transaction() else {
            return;
        };
        // Read in the transaction, after the pages: their snapshot's version.
        if let Ok(cells) = TableCells::read(&tx, &mut self.tree)
            && let Ok(version) = self.data_version()
        {
            self.prefetched = Some((version, cells));
        }
        drop(tx);
    }

    /// Whether this connection still reads the file at `path`.
    pub fn is_for(&self, path: &Path) -> bool {
        self.path == path && self.identity.is_some() && identity(path) == self.identity
    }

    /// Whether nothing was committed to the database since the last
    /// complete scan on this connection (`PRAGMA data_version`).
    pub fn unchanged_since_last_scan(&self) -> bool {
        self.version.is_some() && self.data_version().ok() == self.version
    }

    fn data_version(&self) -> rusqlite::Result<i64> {
        self.conn.query_row("PRAGMA data_version", [], |r| r.get(0))
    }
}

fn is_cant_open(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode as C;
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if matches!(f.code, C::CannotOpen | C::ReadOnly | C::PermissionDenied))
}

fn uri_escape(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            '%' | '?' | '#' => out.push_str(&format!("%{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

fn tables(conn: &Connection) -> rusqlite::Result<HashSet<String>> {
    let mut stmt = conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table'")?;
    let names = stmt.query_map([], |r| r.get::<_, String>(0))?;
    names.collect()
}

fn check_columns(
    conn: &Connection,
    path: &Path,
    table: &'static str,
    required: &[&'static str],
) -> Result<(), IngestError> {
    let mut stmt = conn
        .prepare("SELECT name FROM pragma_table_info(?1)")
        .map_err(|e| IngestError::sqlite(path, e))?;
    let have: HashSet<String> = stmt
        .query_map([table], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect())
        .map_err(|e| IngestError::sqlite(path, e))?;
    match required.iter().find(|c| !have.contains(**c)) {
        Some(column) => Err(IngestError::MissingColumn {
            path: path.to_path_buf(),
            table,
            column,
        }),
        None => Ok(()),
    }
}

/// A column as owned text: SQLite is dynamically typed, so numbers are
/// rendered and blobs read as (lossy) UTF-8.
fn owned(v: ValueRef<'_>) -> Option<String> {
    match v {
        ValueRef::Null => None,
        ValueRef::Integer(i) => Some(i.to_string()),
        ValueRef::Real(f) => Some(f.to_string()),
        ValueRef::Text(b) | ValueRef::Blob(b) => Some(match std::str::from_utf8(b) {
            Ok(s) => s.to_owned(),
            Err(_) => String::from_utf8_lossy(b).into_owned(),
        }),
    }
}

/// Appends one raw value to a fingerprint buffer.
fn encode(v: ValueRef<'_>, buf: &mut Vec<u8>) {
    match v {
        ValueRef::Null => buf.push(0),
        ValueRef::Integer(v) => {
            buf.push(1);
            buf.extend_from_slice(&v.to_le_bytes());
        }
        ValueRef::Real(v) => {
            buf.push(2);
            buf.extend_from_slice(&v.to_le_bytes());
        }
        ValueRef::Text(b) | ValueRef::Blob(b) => {
            buf.push(3);
            buf.extend_from_slice(&(b.len() as u64).to_le_bytes());
            buf.extend_from_slice(b);
        }
    }
}

/// The hash of a fingerprint buffer, never 0 (0 means "unknown").
fn digest(buf: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(buf).max(1)
}

/// A row read in one pass: its text and fingerprint together. Without
/// `buf` the fingerprint is left 0 for the caller to fill in (from the
/// table's pages), and the values are not copied a second time for it.
fn new_agent_row(
    row: &Row<'_>,
    from: usize,
    mut buf: Option<&mut Vec<u8>>,
) -> rusqlite::Result<AgentRow> {
    use std::fmt::Write;
    if let Some(buf) = buf.as_deref_mut() {
        buf.clear();
    }
    let mut text = String::with_capacity(256);
    let mut spans = [None; 11];
    for (i, span) in spans.iter_mut().enumerate() {
        let v = row.get_ref(from + i)?;
        if let Some(buf) = buf.as_deref_mut() {
            encode(v, buf);
        }
        let start = text.len();
        // Rendered as `owned` renders it.
        match v {
            ValueRef::Null => continue,
            ValueRef::Integer(n) => {
                let _ = write!(text, "{n}");
            }
            ValueRef::Real(f) => {
                let _ = write!(text, "{f}");
            }
            ValueRef::Text(b) | ValueRef::Blob(b) => match std::str::from_utf8(b) {
                Ok(s) => text.push_str(s),
                Err(_) => text.push_str(&String::from_utf8_lossy(b)),
            },
        }
        *span = Some((start as u32, text.len() as u32));
    }
    Ok(AgentRow {
        text,
        spans,
        fp: buf.map_or(0, |b| digest(b)),
    })
}

/// Fingerprint of a row's raw values, never 0 (0 means "unknown").
fn fingerprint(row: &Row<'_>, n: usize, buf: &mut Vec<u8>) -> rusqlite::Result<u64> {
    buf.clear();
    for i in 0..n {
        encode(row.get_ref(i)?, buf);
    }
    Ok(digest(buf))
}

fn key_text<'r>(row: &'r Row<'_>, i: usize) -> rusqlite::Result<Option<&'r str>> {
    Ok(match row.get_ref(i)? {
        ValueRef::Text(b) => std::str::from_utf8(b).ok(),
        _ => None,
    })
}

fn report_row(row: &Row<'_>, fp: u64) -> rusqlite::Result<ReportRow> {
    let mut cols: [Option<String>; 10] = Default::default();
    for (i, c) in cols.iter_mut().enumerate() {
        *c = owned(row.get_ref(i)?);
    }
    Ok(ReportRow { cols, fp })
}

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

const BAD_REPORT_ROW: &str = "a run_reports row without a text report_id or agent_id was skipped";

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
            out.warnings.push(BAD_REPORT_ROW.to_string());
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
        None => out
            .warnings
            .push("an agents row without a text agent_id was skipped".to_string()),
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
    if index.by_rowid.is_empty() {
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
                            out.warnings.push(BAD_REPORT_ROW.to_string());
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
