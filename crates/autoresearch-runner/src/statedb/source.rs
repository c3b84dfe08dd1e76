//! [`Source`]: the read-only connection to a runner database a sync keeps
//! open across syncs, with what it learnt of the file (its identity, its
//! `data_version`, the pages it parsed).

use super::rows::{digest, encode};
use crate::error::IngestError;
use crate::pages;
use rusqlite::functions::FunctionFlags;
use rusqlite::{Connection, OpenFlags};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How much of a runner database is read through a memory map.
const MMAP_SIZE: u64 = 1 << 30;

/// How long a read waits for a lock the runner holds (WAL readers rarely wait).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The page cells of the two tables a sync reads (see [`crate::pages`]).
#[derive(Default)]
pub(crate) struct TableCells {
    pub(super) agents: Option<pages::Cells>,
    pub(super) reports: Option<pages::Cells>,
}

impl TableCells {
    /// Reads both tables' cells in the current read transaction.
    pub(super) fn read(
        conn: &Connection,
        tree: &mut Option<pages::Tree>,
    ) -> rusqlite::Result<TableCells> {
        let mut cells = pages::tables_cells(conn, &["agents", "run_reports"], tree)?;
        let reports = cells.pop().flatten();
        Ok(TableCells {
            agents: cells.pop().flatten(),
            reports,
        })
    }
}

/// The SQL function that fingerprints its arguments as the reader does.
pub(super) const FP_FUNCTION: &str = "autoresearch_row_fp";

/// An open read-only connection to a runner database, kept across syncs.
pub(crate) struct Source {
    pub(super) conn: Connection,
    pub(super) path: PathBuf,
    /// Which file the connection reads (a replaced file needs a new one).
    identity: Option<(u64, u64)>,
    /// `PRAGMA data_version` after the last complete scan.
    pub(super) version: Option<i64>,
    /// Whether row fingerprints can be read from the table's pages
    /// (`sqlite_dbpage`, see [`crate::pages`]).
    pub(super) pages: bool,
    /// What the last read of the pages parsed.
    pub(super) tree: Option<pages::Tree>,
    /// Cells read by [`Source::prefetch_pages`], with the `data_version`
    /// they hold for.
    pub(super) prefetched: Option<(i64, TableCells)>,
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

    pub(super) fn data_version(&self) -> rusqlite::Result<i64> {
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

pub(super) fn tables(conn: &Connection) -> rusqlite::Result<HashSet<String>> {
    let mut stmt = conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table'")?;
    let names = stmt.query_map([], |r| r.get::<_, String>(0))?;
    names.collect()
}

pub(super) fn check_columns(
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
