//! Row fingerprints read from a table's B-tree pages instead of its rows.
//!
//! A re-sync has to learn which rows changed. Stepping through every row
//! with SQL costs about half a microsecond per row however little is read.
//! SQLite's `sqlite_dbpage` virtual table hands out the database pages as
//! the current read transaction sees them (WAL frames included). The reader
//! takes every page in one pass, parses the table B-tree pages (the file
//! format is documented at <https://sqlite.org/fileformat2.html>), hashes
//! each leaf cell's record bytes, and then walks the wanted table from its
//! root page so that only its own pages count: the same bytes under the
//! same table definition are the same row.
//!
//! A first sync also takes every row of a table from its pages
//! ([`table_records`], decoded by [`record_values`]): see `statedb/records.rs`.
//!
//! Only a table with rowids is read this way. `sqlite_dbpage` exists only
//! when SQLite was built with `SQLITE_ENABLE_DBPAGE_VTAB` (this workspace's
//! `.cargo/config.toml` sets it for the bundled SQLite); without it, or on
//! anything the walk does not understand, [`table_cells`] returns `None`
//! and the caller scans rows with SQL instead.

use rusqlite::{Connection, OptionalExtension};

mod records;
pub(crate) use records::{record_values, table_records};

/// `(rowid, hash of the record's bytes)` of every row of a table, in rowid
/// order. A hash is never 0.
pub(crate) type Cells = Vec<(i64, u64)>;

/// Page types (the first byte of a B-tree page header).
const INTERIOR_TABLE: u8 = 0x05;
const LEAF_TABLE: u8 = 0x0d;

/// Whether `conn` has the `sqlite_dbpage` table.
pub(crate) fn available(conn: &Connection) -> bool {
    conn.prepare("SELECT data FROM sqlite_dbpage WHERE pgno = 1")
        .is_ok()
}

/// The cells of each rowid table in `tables`, from one pass over the pages
/// in the connection's current read transaction (the caller holds one, so
/// every page comes from one snapshot). `None` for a table that cannot be
/// read page by page (missing, without rowids, or a page the walk does not
/// understand); all `None` without `sqlite_dbpage`.
///
/// `last` holds what the last read of the same database parsed: leaf pages
/// whose bytes did not change since are not parsed again. It is replaced by
/// this read's.
pub(crate) fn tables_cells(
    conn: &Connection,
    tables: &[&str],
    last: &mut Option<Tree>,
) -> rusqlite::Result<Vec<Option<Cells>>> {
    let mut roots = Vec::with_capacity(tables.len());
    for table in tables {
        roots.push(table_root(conn, table)?);
    }
    if roots.iter().all(Option::is_none) {
        return Ok(vec![None; tables.len()]);
    }
    let Some(tree) = Tree::read(conn, last.take())? else {
        return Ok(vec![None; tables.len()]);
    };
    let mut out = Vec::with_capacity(tables.len());
    for root in roots {
        out.push(match root {
            Some((root, seed)) => tree.cells_of(conn, root, seed)?,
            None => None,
        });
    }
    // A leaf page's cells depend on its bytes alone: whatever a walk met,
    // the next read may reuse them.
    *last = Some(tree);
    Ok(out)
}

/// The root page of rowid table `table`, and a hash of its definition
/// (the same record bytes under another definition may be other values:
/// the definition goes into every row's hash). `None` for a missing table
/// or one without rowids (`wr`: an index B-tree keyed by its primary key,
/// not read this way).
pub(crate) fn table_root(conn: &Connection, table: &str) -> rusqlite::Result<Option<(u32, u64)>> {
    let root: Option<(i64, String)> = conn
        .query_row(
            "SELECT s.rootpage, s.sql FROM sqlite_schema AS s
             JOIN pragma_table_list AS l ON l.name = s.name AND l.schema = 'main'
             WHERE s.type = 'table' AND s.name = ?1 AND l.wr = 0",
            [table],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                ))
            },
        )
        .optional()?;
    Ok(root.and_then(|(root, sql)| {
        Some((
            u32::try_from(root).ok()?,
            xxhash_rust::xxh3::xxh3_64(sql.as_bytes()),
        ))
    }))
}

/// The cells of rowid table `table` (see [`tables_cells`]).
#[cfg(test)]
pub(crate) fn table_cells(
    conn: &Connection,
    table: &str,
    last: &mut Option<Tree>,
) -> rusqlite::Result<Option<Cells>> {
    Ok(tables_cells(conn, &[table], last)?.pop().flatten())
}

/// What one pass over the pages found: every table B-tree page parsed.
pub(crate) struct Tree {
    /// Bytes of a page that hold content (the page size less the reserved
    /// bytes at its end).
    usable: usize,
    /// Per page number: what the page is, as far as the walk needs.
    pages: Vec<Page>,
    /// Per page number: the hash of a leaf page's bytes (0 for others).
    hashes: Vec<u64>,
    /// The cells of all leaf pages (with the hash of the record alone, see
    /// [`seeded`]), each leaf's a range of this.
    cells: Cells,
    /// Children of interior pages, each interior page's a range of this.
    children: Vec<u32>,
    /// Cells whose payload spills onto overflow pages.
    spilled: Vec<Spill>,
}

#[derive(Clone, Copy, Default)]
enum Page {
    /// Not a table B-tree page (an index, overflow or free page), or one
    /// that did not parse: fine unless the walk reaches it.
    #[default]
    Other,
    Leaf {
        cells: (u32, u32),
        /// Whether a cell's record goes on in an overflow chain.
        spills: bool,
    },
    Interior {
        children: (u32, u32),
    },
}

/// A cell whose record goes on in an overflow chain.
struct Spill {
    /// Its index in `Tree::cells`.
    cell: u32,
    /// The part of the record on the leaf page.
    local: Vec<u8>,
    first_overflow: u32,
    /// Bytes of the record on overflow pages.
    rest: usize,
}

impl Tree {
    /// Reads and parses every page. `None` when the page size makes no
    /// sense (a database the walk does not understand).
    fn read(conn: &Connection, last: Option<Tree>) -> rusqlite::Result<Option<Tree>> {
        let page_count: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        let pages = usize::try_from(page_count).unwrap_or(0) + 1;
        let mut tree = Tree {
            usable: 0,
            pages: vec![Page::Other; pages],
            hashes: vec![0; pages],
            cells: Vec::new(),
            children: Vec::new(),
            spilled: Vec::new(),
        };
        let mut stmt = conn.prepare_cached("SELECT pgno, data FROM sqlite_dbpage")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let pgno: i64 = row.get(0)?;
            let data = row.get_ref(1)?.as_blob()?;
            if pgno == 1 {
                // The reserved bytes per page are in the file header.
                let reserved = data.get(20).copied().unwrap_or(255) as usize;
                tree.usable = data.len().saturating_sub(reserved);
                // SQLite's own minimum; below it the cell arithmetic breaks.
                if tree.usable < 480 {
                    return Ok(None);
                }
                if last.as_ref().is_some_and(|l| l.usable != tree.usable) {
                    return Ok(None);
                }
            }
            let Some(slot) = usize::try_from(pgno).ok().filter(|p| *p < tree.pages.len()) else {
                continue;
            };
            if tree.usable == 0 {
                return Ok(None);
            }
            // A leaf page with the same bytes as in the last read has the
            // same cells (unless some spill: their overflow pages may
            // have changed under the same leaf bytes).
            let hash = match data.get(if pgno == 1 { 100 } else { 0 }) {
                Some(&LEAF_TABLE) => xxhash_rust::xxh3::xxh3_64(data),
                _ => 0,
            };
            let reused = last.as_ref().and_then(|l| match l.pages.get(slot) {
                Some(Page::Leaf {
                    cells: (a, b),
                    spills: false,
                }) if hash != 0 && l.hashes.get(slot) == Some(&hash) => {
                    Some(&l.cells[*a as usize..*b as usize])
                }
                _ => None,
            });
            let page = match reused {
                Some(cells) => {
                    let from = tree.cells.len() as u32;
                    tree.cells.extend_from_slice(cells);
                    Page::Leaf {
                        cells: (from, tree.cells.len() as u32),
                        spills: false,
                    }
                }
                None => tree.parse(data, pgno == 1).unwrap_or(Page::Other),
            };
            tree.pages[slot] = page;
            tree.hashes[slot] = hash;
        }
        Ok(Some(tree))
    }

    /// Parses one page. `None`: not a table B-tree page as expected.
    fn parse(&mut self, page: &[u8], first: bool) -> Option<Page> {
        let usable = self.usable;
        let page = page.get(..usable)?;
        // Page 1 starts with the 100-byte file header.
        let h = if first { 100 } else { 0 };
        let count = be16(page, h + 3)?;
        match *page.get(h)? {
            INTERIOR_TABLE => {
                let from = self.children.len();
                for i in 0..count {
                    let cell = be16(page, h + 12 + 2 * i)?;
                    let child = be32(page, cell)?;
                    self.children.push(child);
                }
                self.children.push(be32(page, h + 8)?);
                Some(Page::Interior {
                    children: (from as u32, self.children.len() as u32),
                })
            }
            LEAF_TABLE => {
                // The largest record kept whole on a page, and the size of
                // the local part of a larger one ("B-tree Pages").
                let max_local = usable - 35;
                let min_local = ((usable - 12) * 32 / 255) - 23;
                let from = self.cells.len();
                let spilled = self.spilled.len();
                let parsed = (|| {
                    for i in 0..count {
                        let cell = be16(page, h + 8 + 2 * i)?;
                        let (len, a) = varint(page, cell)?;
                        let (rowid, b) = varint(page, cell + a)?;
                        let start = cell + a + b;
                        let len = usize::try_from(len).ok()?;
                        if len <= max_local {
                            let record = page.get(start..start + len)?;
                            self.cells.push((rowid as i64, record_hash(record)));
                        } else {
                            let k = min_local + (len - min_local) % (usable - 4);
                            let local = if k <= max_local { k } else { min_local };
                            self.spilled.push(Spill {
                                cell: self.cells.len() as u32,
                                local: page.get(start..start + local)?.to_vec(),
                                first_overflow: be32(page, start + local)?,
                                rest: len - local,
                            });
                            self.cells.push((rowid as i64, 0));
                        }
                    }
                    Some(())
                })();
                if parsed.is_none() {
                    self.cells.truncate(from);
                    self.spilled.truncate(spilled);
                    return None;
                }
                Some(Page::Leaf {
                    cells: (from as u32, self.cells.len() as u32),
                    spills: self.spilled.len() > spilled,
                })
            }
            _ => None,
        }
    }

    /// The leaf pages of the B-tree at `root`, in key order; `None` when
    /// the walk meets a page that is not one of its table pages or meets
    /// one twice (a damaged tree).
    fn leaves_of(&self, root: u32) -> Option<Vec<u32>> {
        let mut out = Vec::new();
        let mut stack = vec![root];
        let mut visited = vec![false; self.pages.len()];
        while let Some(pgno) = stack.pop() {
            match visited.get_mut(pgno as usize) {
                Some(v) if !*v => *v = true,
                _ => return None,
            }
            match self.pages.get(pgno as usize) {
                Some(Page::Interior { children: (a, b) }) => {
                    stack.extend(self.children[*a as usize..*b as usize].iter().rev());
                }
                Some(Page::Leaf { .. }) => out.push(pgno),
                _ => return None,
            }
        }
        Some(out)
    }

    /// The cells of the B-tree at `root`, its leaves in key order, each
    /// hash [`seeded`] with `seed`.
    fn cells_of(&self, conn: &Connection, root: u32, seed: u64) -> rusqlite::Result<Option<Cells>> {
        let mut out: Cells = Vec::new();
        // Spilled cells of this tree: (index in `out`, index in `cells`).
        let mut spills: Vec<(usize, u32)> = Vec::new();
        let mut stack = vec![root];
        // A page of a B-tree has one parent: a page met twice is a damaged
        // tree (and would make the walk go round).
        let mut visited = vec![false; self.pages.len()];
        while let Some(pgno) = stack.pop() {
            match visited.get_mut(pgno as usize) {
                Some(v) if !*v => *v = true,
                _ => return Ok(None),
            }
            match self.pages.get(pgno as usize) {
                Some(Page::Interior { children: (a, b) }) => {
                    // Popped last-in first-out: pushed right to left.
                    stack.extend(self.children[*a as usize..*b as usize].iter().rev());
                }
                Some(Page::Leaf { cells: (a, b), .. }) => {
                    for at in *a..*b {
                        if self.cells[at as usize].1 == 0 {
                            spills.push((out.len(), at));
                        }
                        out.push(self.cells[at as usize]);
                    }
                }
                _ => return Ok(None),
            }
        }
        if !spills.is_empty() {
            let mut pages =
                conn.prepare_cached("SELECT data FROM sqlite_dbpage WHERE pgno = ?1")?;
            let mut record = Vec::new();
            for (at, cell) in spills {
                let Ok(s) = self.spilled.binary_search_by_key(&cell, |s| s.cell) else {
                    return Ok(None);
                };
                let spill = &self.spilled[s];
                record.clear();
                record.extend_from_slice(&spill.local);
                if !read_overflow(
                    &mut pages,
                    self.usable,
                    spill,
                    &mut record,
                    self.pages.len(),
                )? {
                    return Ok(None);
                }
                out[at].1 = record_hash(&record);
            }
        }
        // Leaves in key order give ascending rowids; anything else is a
        // page the walk misread.
        if out.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Ok(None);
        }
        for cell in &mut out {
            cell.1 = seeded(cell.1, seed);
        }
        Ok(Some(out))
    }
}

/// Appends the overflow part of `spill` to `record`; false on a chain
/// that ends early, loops or leaves the file.
fn read_overflow(
    pages: &mut rusqlite::CachedStatement<'_>,
    usable: usize,
    spill: &Spill,
    record: &mut Vec<u8>,
    page_count: usize,
) -> rusqlite::Result<bool> {
    let mut pgno = spill.first_overflow;
    let mut left = spill.rest;
    let mut hops = 0;
    while left > 0 {
        hops += 1;
        if pgno == 0 || hops > page_count {
            return Ok(false);
        }
        let mut rows = pages.query([pgno])?;
        let Some(row) = rows.next()? else {
            return Ok(false);
        };
        let data = row.get_ref(0)?.as_blob()?;
        let take = left.min(usable - 4);
        let (Some(next), Some(chunk)) = (be32(data, 0), data.get(4..4 + take)) else {
            return Ok(false);
        };
        record.extend_from_slice(chunk);
        left -= take;
        pgno = next;
    }
    Ok(true)
}

/// The hash of a record's bytes, never 0 (0 marks a spilled cell whose
/// overflow pages are not read yet).
fn record_hash(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes).max(1)
}

/// A record hash under a table definition's `seed`: a bijection of the
/// record hash for one seed (distinct records stay distinct), another
/// value for another seed. Never 0.
fn seeded(hash: u64, seed: u64) -> u64 {
    let m = (hash ^ seed).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (m ^ (m >> 32)).max(1)
}

fn be16(b: &[u8], at: usize) -> Option<usize> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?) as usize)
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// SQLite's variable-length integer at `at`: its value and length.
fn varint(b: &[u8], at: usize) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for i in 0..8 {
        let byte = *b.get(at + i)?;
        v = (v << 7) | (byte & 0x7f) as u64;
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    let byte = *b.get(at + 8)?;
    Some(((v << 8) | byte as u64, 9))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::params;
    use std::collections::BTreeMap;

    #[test]
    fn varints_decode_as_sqlite_writes_them() {
        assert_eq!(varint(&[0x05], 0), Some((5, 1)));
        assert_eq!(varint(&[0x81, 0x00], 0), Some((128, 2)));
        assert_eq!(varint(&[0xff; 9], 0), Some((u64::MAX, 9)));
        assert_eq!(varint(&[0x81], 0), None);
    }

    /// A WAL database with `page_size` and table `t`, in a temp dir.
    fn database(page_size: u32) -> (tempfile::TempDir, std::path::PathBuf, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(&format!(
            "PRAGMA page_size = {page_size}; PRAGMA journal_mode = wal;
             CREATE TABLE t (k TEXT PRIMARY KEY, a TEXT, b INTEGER, c REAL);"
        ))
        .unwrap();
        (dir, path, conn)
    }

    /// A text of `len` bytes, different for every `seed`.
    fn text(len: usize, seed: u64) -> String {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (b'a' + (x % 26) as u8) as char
            })
            .collect()
    }

    fn fill(conn: &Connection, rows: u64, page_size: usize) {
        let tx = conn.unchecked_transaction().unwrap();
        for i in 0..rows {
            // Every 7th record spills onto overflow pages, some of them
            // onto a chain of several.
            let len = match i % 7 {
                0 => page_size * (1 + (i % 3) as usize) + 17,
                _ => (i % 50) as usize,
            };
            let b = (i % 11 != 0).then_some(i as i64 * 1000);
            tx.execute(
                "INSERT INTO t VALUES (?1, ?2, ?3, ?4)",
                params![format!("k{i:06}"), text(len, i), b, i as f64 / 8.0],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }

    /// The cells of `t` and its rowids by SQL, read in one transaction of a
    /// read-only connection (as the ingest reads).
    fn read(path: &std::path::Path, last: &mut Option<Tree>) -> (Cells, Vec<i64>) {
        let conn =
            Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let tx = conn.unchecked_transaction().unwrap();
        let rowids: Vec<i64> = tx
            .prepare("SELECT rowid FROM t ORDER BY rowid")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let cells = table_cells(&tx, "t", last).unwrap().expect("a rowid table");
        (cells, rowids)
    }

    fn hashes(cells: &Cells) -> BTreeMap<i64, u64> {
        cells.iter().copied().collect()
    }

    #[test]
    fn every_row_is_read_in_rowid_order_for_every_page_size() {
        for page_size in [512usize, 4096, 65536] {
            let (_dir, path, conn) = database(page_size as u32);
            fill(&conn, 1500, page_size);
            // Freed pages keep their old bytes: the walk must not see them.
            conn.execute("DELETE FROM t WHERE rowid % 5 = 0", [])
                .unwrap();
            let (cells, rowids) = read(&path, &mut None);
            assert_eq!(
                cells.iter().map(|c| c.0).collect::<Vec<_>>(),
                rowids,
                "page size {page_size}"
            );
            assert!(cells.iter().all(|c| c.1 != 0));
        }
    }

    #[test]
    fn exactly_the_changed_rows_change_hash() {
        for page_size in [512usize, 4096] {
            let (_dir, path, conn) = database(page_size as u32);
            fill(&conn, 2000, page_size);
            let mut last = None;
            let (before, _) = read(&path, &mut last);
            let before = hashes(&before);
            // Rows whose values change: a short text, a number, a NULL, the
            // last byte of a record that spills over several pages (its
            // leaf page keeps the same bytes), and a row written again with
            // the same values (not a change).
            let big = 14; // i % 7 == 0 and i % 3 == 2: three pages of overflow
            let mut changed = vec![];
            let k = |i: u64| format!("k{i:06}");
            conn.execute("UPDATE t SET a = a || '!' WHERE k = ?1", [k(5)])
                .unwrap();
            changed.push(6);
            conn.execute("UPDATE t SET b = 42 WHERE k = ?1", [k(900)])
                .unwrap();
            changed.push(901);
            conn.execute("UPDATE t SET b = NULL WHERE k = ?1", [k(1201)])
                .unwrap();
            changed.push(1202);
            let a: String = conn
                .query_row("SELECT a FROM t WHERE k = ?1", [k(big)], |r| r.get(0))
                .unwrap();
            assert!(a.len() > 2 * page_size);
            let mut tail = a.clone();
            tail.pop();
            tail.push(if a.ends_with('z') { 'y' } else { 'z' });
            conn.execute("UPDATE t SET a = ?1 WHERE k = ?2", params![tail, k(big)])
                .unwrap();
            changed.push(big as i64 + 1);
            conn.execute("UPDATE t SET a = a WHERE k = ?1", [k(1500)])
                .unwrap();
            conn.execute("DELETE FROM t WHERE k = ?1", [k(1700)])
                .unwrap();
            conn.execute("INSERT INTO t VALUES ('new', 'n', 1, 1.0)", [])
                .unwrap();
            let (after, rowids) = read(&path, &mut last);
            assert_eq!(after.iter().map(|c| c.0).collect::<Vec<_>>(), rowids);
            let after = hashes(&after);
            let differ: Vec<i64> = before
                .iter()
                .filter(|(id, h)| after.get(id).is_some_and(|a| a != *h))
                .map(|(id, _)| *id)
                .collect();
            changed.sort();
            assert_eq!(differ, changed, "page size {page_size}");
            assert!(!after.contains_key(&1701));
            assert_eq!(after.len(), before.len());
            // The same answer without the last read's pages.
            let (fresh, _) = read(&path, &mut None);
            assert_eq!(hashes(&fresh), after);
        }
    }

    #[test]
    fn a_new_table_definition_changes_every_hash() {
        let (_dir, path, conn) = database(4096);
        fill(&conn, 300, 4096);
        let mut last = None;
        let before = hashes(&read(&path, &mut last).0);
        conn.execute_batch("ALTER TABLE t ADD COLUMN d TEXT DEFAULT 'x'")
            .unwrap();
        let after = hashes(&read(&path, &mut last).0);
        assert_eq!(before.len(), after.len());
        assert!(before.iter().all(|(id, h)| after[id] != *h));
    }

    #[test]
    fn the_parsed_pages_are_kept_when_a_wanted_table_is_missing() {
        let (_dir, _path, conn) = database(4096);
        fill(&conn, 200, 4096);
        let tx = conn.unchecked_transaction().unwrap();
        let mut last = None;
        let cells = tables_cells(&tx, &["t", "run_reports"], &mut last).unwrap();
        assert!(cells[0].is_some() && cells[1].is_none());
        assert!(last.is_some());
    }

    #[test]
    fn a_damaged_tree_is_refused_not_walked_forever() {
        let (_dir, path, conn) = database(4096);
        fill(&conn, 3000, 4096);
        let root: i64 = conn
            .query_row(
                "SELECT rootpage FROM sqlite_schema WHERE name = 't'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
        drop(conn);
        // Every child pointer of the root (an interior page) names the root.
        let mut bytes = std::fs::read(&path).unwrap();
        let page = &mut bytes[(root as usize - 1) * 4096..root as usize * 4096];
        assert_eq!(page[0], INTERIOR_TABLE);
        let count = be16(page, 3).unwrap();
        for i in 0..count {
            let cell = be16(page, 12 + 2 * i).unwrap();
            page[cell..cell + 4].copy_from_slice(&(root as u32).to_be_bytes());
        }
        page[8..12].copy_from_slice(&(root as u32).to_be_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let conn =
            Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let tx = conn.unchecked_transaction().unwrap();
        assert_eq!(table_cells(&tx, "t", &mut None).unwrap(), None);
    }

    #[test]
    fn tables_without_rowids_are_not_read() {
        let (_dir, path, conn) = database(4096);
        conn.execute_batch(
            "CREATE TABLE w (k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID;
             INSERT INTO w VALUES ('a', 'b');",
        )
        .unwrap();
        let conn = Connection::open(&path).unwrap();
        let tx = conn.unchecked_transaction().unwrap();
        assert_eq!(table_cells(&tx, "w", &mut None).unwrap(), None);
        assert_eq!(table_cells(&tx, "nope", &mut None).unwrap(), None);
        assert!(table_cells(&tx, "t", &mut None).unwrap().is_some());
    }

    #[test]
    fn the_read_sees_its_transaction_not_a_later_commit() {
        let (_dir, path, writer) = database(4096);
        fill(&writer, 500, 4096);
        let reader =
            Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        reader
            .execute_batch("PRAGMA mmap_size = 1073741824")
            .unwrap();
        let mut last = None;
        let tx = reader.unchecked_transaction().unwrap();
        let n: i64 = tx
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        // The runner commits while the read transaction is open.
        writer.execute("UPDATE t SET b = -1", []).unwrap();
        writer
            .execute("DELETE FROM t WHERE rowid < 100", [])
            .unwrap();
        let during = table_cells(&tx, "t", &mut last).unwrap().unwrap();
        assert_eq!(during.len() as i64, n);
        drop(tx);
        let fresh = hashes(&read(&path, &mut None).0);
        let before: BTreeMap<i64, u64> = during.into_iter().collect();
        assert_eq!(fresh.len() as i64, n - 99);
        assert!(fresh.iter().all(|(id, h)| before[id] != *h));
    }
}
