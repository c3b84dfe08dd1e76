//! A first scan's `agents` rows decoded from the table's pages (see
//! [`crate::pages::table_records`]) instead of stepped through with SQL.
//!
//! A first sync reads every row. The pages it reads for the rows'
//! fingerprints hold every record already; decoding them costs about a
//! tenth of stepping through the rows with SQL. It is taken only where it
//! gives exactly the values SQL gives ([`Layout::of`]); anything else (a
//! record written before a column was added, whose value is the column's
//! default; a column of REAL affinity, whose integral floats are stored as
//! integers; the rowid alias; a generated column; a UTF-16 database; a
//! page or record that does not parse) leaves the rows to SQL.

use super::AGENT_COLUMNS;
use super::rows::{AgentRow, agent_row};
use crate::pages::{self, Cells, Tree};
use rusqlite::Connection;
use rusqlite::types::ValueRef;

/// Where each of [`AGENT_COLUMNS`] is in an `agents` record.
pub(super) struct Layout {
    /// The record field of each column.
    fields: [usize; 11],
    /// The column of [`AGENT_COLUMNS`] each record field is, if any.
    slots: Vec<Option<usize>>,
}

/// SQLite's type affinity of a declared column type is REAL ("Determination
/// of Column Affinity", <https://sqlite.org/datatype3.html>).
fn real_affinity(declared: &str) -> bool {
    let t = declared.to_ascii_uppercase();
    !t.contains("INT")
        && !["CHAR", "CLOB", "TEXT"].iter().any(|w| t.contains(w))
        && !t.contains("BLOB")
        && !t.is_empty()
        && ["REAL", "FLOA", "DOUB"].iter().any(|w| t.contains(w))
}

impl Layout {
    /// The layout of the `agents` table, when its records decode to the
    /// values SQL reads: a UTF-8 database, no generated or hidden column,
    /// and none of the columns read is the rowid alias or of REAL affinity.
    pub(super) fn of(conn: &Connection) -> rusqlite::Result<Option<Layout>> {
        let encoding: String = conn.query_row("PRAGMA encoding", [], |r| r.get(0))?;
        if encoding != "UTF-8" {
            return Ok(None);
        }
        let mut stmt =
            conn.prepare_cached("SELECT name, type, pk, hidden FROM pragma_table_xinfo('agents')")?;
        let columns: Vec<(String, String, i64, i64)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<rusqlite::Result<_>>()?;
        if columns.iter().any(|c| c.3 != 0) {
            return Ok(None);
        }
        // A single INTEGER PRIMARY KEY column is the rowid: its record
        // field is NULL.
        let keys: Vec<_> = columns.iter().filter(|c| c.2 > 0).collect();
        let alias = match keys.as_slice() {
            [only] if only.1.eq_ignore_ascii_case("INTEGER") => Some(only.0.as_str()),
            _ => None,
        };
        let mut fields = [0; 11];
        for (field, name) in fields.iter_mut().zip(AGENT_COLUMNS) {
            let Some(at) = columns.iter().position(|c| c.0 == name) else {
                return Ok(None);
            };
            if Some(name) == alias || real_affinity(&columns[at].1) {
                return Ok(None);
            }
            *field = at;
        }
        let mut slots = vec![None; columns.len()];
        for (slot, &field) in fields.iter().enumerate() {
            slots[field] = Some(slot);
        }
        Ok(Some(Layout { fields, slots }))
    }
}

/// One `agents` row decoded from the pages: its rowid, and the row, or
/// `None` for a row without a text agent_id (skipped with a warning).
pub(super) type PageRow = (i64, Option<AgentRow>);

/// Every `agents` row from the table's pages in rowid order, each with
/// its fingerprint from `cells` (the same walk's, so the same rows in the
/// same order); `None` when the pages or a record are not as [`Layout`]
/// and [`pages::table_records`] expect: the caller reads the rows with SQL.
pub(super) fn agents(
    conn: &Connection,
    tree: &Tree,
    cells: &Cells,
    layout: &Layout,
) -> rusqlite::Result<Option<Vec<PageRow>>> {
    let Some((root, _)) = pages::table_root(conn, "agents")? else {
        return Ok(None);
    };
    let mut out: Vec<PageRow> = Vec::with_capacity(cells.len());
    let read = pages::table_records(conn, tree, root, |rowid, record| {
        let Some(&(cell_rowid, fp)) = cells.get(out.len()) else {
            return false;
        };
        if cell_rowid != rowid {
            return false;
        }
        let mut values = [ValueRef::Null; 11];
        let fields = pages::record_values(record, |i, v| {
            if let Some(Some(slot)) = layout.slots.get(i) {
                values[*slot] = v;
            }
        });
        // A field past the record's: a column added after the row was
        // written, whose value is its default.
        match fields {
            Some(n) if layout.fields.iter().all(|&at| at < n) => {}
            _ => return false,
        }
        // As `rows::key_text`: a non-empty UTF-8 text.
        let text_id = matches!(values[0], ValueRef::Text(b) if !b.is_empty() && std::str::from_utf8(b).is_ok());
        out.push((
            rowid,
            text_id.then(|| {
                let mut row = agent_row(&values, None);
                row.fp = fp;
                row
            }),
        ));
        true
    })?;
    Ok((read && out.len() == cells.len()).then_some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Index;
    use crate::statedb::{Scan, Source, scan};
    use proptest::prelude::*;
    use rusqlite::types::Value;
    use std::path::Path;

    /// Declared types of a column: every affinity, REAL's among them.
    const TYPES: [&str; 8] = [
        "TEXT",
        "",
        "INTEGER",
        "BLOB",
        "NUMERIC",
        "VARCHAR(20)",
        "REAL",
        "DOUBLE PRECISION",
    ];

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            1 => Just(Value::Null),
            2 => prop::sample::select(vec![
                0i64, 1, -1, 127, -129, 40_000, 1 << 23, -(1 << 31), 1 << 40,
                i64::MIN, i64::MAX,
            ])
            .prop_map(Value::Integer),
            1 => prop::sample::select(vec![0.5f64, -0.0, 2.0, 1e308, -3.25e-300, f64::NAN])
                .prop_map(Value::Real),
            4 => "[a-z0-9 üñ🚀-]{0,24}".prop_map(Value::Text),
            1 => (0usize..7_000, any::<char>())
                .prop_map(|(n, c)| Value::Text(c.to_string().repeat(n))),
            1 => prop::collection::vec(any::<u8>(), 0..40).prop_map(Value::Blob),
        ]
    }

    /// An `agents` table: each column's declared type, extra columns
    /// between, an INTEGER PRIMARY KEY (the rowid alias) or not.
    #[derive(Clone, Debug)]
    struct Table {
        page_size: u32,
        types: Vec<usize>,
        extras: Vec<(usize, usize)>,
        alias: Option<bool>,
        /// `workspace_path` added after the rows (their records are short).
        added_late: bool,
        rows: Vec<Vec<Value>>,
        deletes: Vec<usize>,
    }

    fn table() -> impl Strategy<Value = Table> {
        (
            prop::sample::select(vec![512u32, 4096]),
            prop::collection::vec(
                prop::sample::select((0..TYPES.len()).collect::<Vec<_>>()),
                11,
            ),
            prop::collection::vec((0usize..11, 0usize..TYPES.len()), 0..3),
            prop::option::weighted(0.2, any::<bool>()),
            prop::bool::weighted(0.1),
            prop::collection::vec(prop::collection::vec(value(), 14), 0..60),
            prop::collection::vec(0usize..60, 0..6),
        )
            .prop_map(
                |(page_size, mut types, extras, alias, added_late, rows, deletes)| {
                    // Mostly tables whose rows the pages can give.
                    for t in &mut types {
                        if TYPES[*t].contains("REAL") || TYPES[*t].contains("DOUB") {
                            *t = 0;
                        }
                    }
                    Table {
                        page_size,
                        types,
                        extras,
                        alias,
                        added_late,
                        rows,
                        deletes,
                    }
                },
            )
    }

    /// Writes `t` as a runner file; whether its rows should be read from
    /// the pages.
    fn write(t: &Table, path: &Path) -> bool {
        let conn = Connection::open(path).unwrap();
        conn.pragma_update(None, "page_size", t.page_size).unwrap();
        conn.pragma_update(None, "journal_mode", "wal").unwrap();
        let mut defs = Vec::new();
        let mut names = Vec::new();
        if t.alias == Some(false) {
            defs.push("id INTEGER PRIMARY KEY".to_string());
        }
        for (i, name) in AGENT_COLUMNS.iter().enumerate() {
            for (j, (at, ty)) in t.extras.iter().enumerate() {
                if *at == i {
                    defs.push(format!("x{j} {}", TYPES[*ty]));
                    names.push(format!("x{j}"));
                }
            }
            if i == 10 && t.added_late {
                continue;
            }
            let ty = if i == 0 && t.alias == Some(true) {
                "INTEGER PRIMARY KEY".to_string()
            } else {
                TYPES[t.types[i]].to_string()
            };
            defs.push(format!("{name} {ty}"));
            names.push(name.to_string());
        }
        conn.execute_batch(&format!("CREATE TABLE agents ({})", defs.join(", ")))
            .unwrap();
        let sql = format!(
            "INSERT INTO agents ({}) VALUES ({})",
            names.join(", "),
            vec!["?"; names.len()].join(", ")
        );
        for (i, row) in t.rows.iter().enumerate() {
            let mut values: Vec<Value> = row.iter().take(names.len()).cloned().collect();
            if t.alias == Some(true) {
                // The alias takes integers only.
                values[t.extras.iter().filter(|e| e.0 == 0).count()] = Value::Integer(i as i64 * 3);
            }
            conn.execute(&sql, rusqlite::params_from_iter(values))
                .unwrap();
        }
        for d in &t.deletes {
            conn.execute("DELETE FROM agents WHERE rowid = ?1", [*d as i64 + 1])
                .unwrap();
        }
        if t.added_late {
            conn.execute_batch("ALTER TABLE agents ADD COLUMN workspace_path TEXT DEFAULT 'w'")
                .unwrap();
        }
        let real = t.types.iter().any(|ty| real_affinity(TYPES[*ty]));
        let short = t.added_late && !t.rows.is_empty();
        t.alias != Some(true) && !real && !short
    }

    /// What a first scan read, comparable across read paths.
    type Read = (usize, Vec<String>, Vec<(i64, Vec<Option<String>>)>);

    fn read(scan: &Scan) -> Read {
        let rows = scan
            .agents
            .iter()
            .map(|(rowid, _, a)| {
                (
                    *rowid,
                    (0..11).map(|i| a.get(i).map(str::to_string)).collect(),
                )
            })
            .collect();
        (scan.rows_read, scan.warnings.clone(), rows)
    }

    /// A first scan with page reads and one with SQL alone.
    fn both(path: &Path) -> (Result<Scan, String>, Result<Scan, String>) {
        let go = |pages: bool| {
            let mut source = Source::open(path, pages).map_err(|e| e.to_string())?;
            scan(&mut source, &mut Index::default()).map_err(|e| e.to_string())
        };
        (go(true), go(false))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

        /// Rows decoded from the pages are the rows SQL reads, value for
        /// value, and the pages are used exactly where they give that.
        #[test]
        fn rows_from_the_pages_equal_rows_from_sql(t in table()) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("state.db");
            let expect_pages = write(&t, &path);
            let (pages, sql) = both(&path);
            let (pages, sql) = (pages.unwrap(), sql.unwrap());
            prop_assert_eq!(read(&pages), read(&sql));
            prop_assert_eq!(pages.read_path, "pages");
            prop_assert!(!sql.rows_from_pages);
            prop_assert_eq!(pages.rows_from_pages, expect_pages);
            // Each row's fingerprint is its cell's, as a row scan with
            // page reads gives it.
            prop_assert!(pages.agents.iter().all(|a| a.2.fp != 0));
        }
    }

    #[test]
    fn records_that_do_not_parse_are_refused() {
        // Header of 3 bytes: two fields, a 1-byte integer and a 1-char text.
        let good = [3u8, 1, 15, 0xff, b'a'];
        let mut got = Vec::new();
        assert_eq!(
            pages::record_values(&good, |i, v| got.push((i, v))),
            Some(2)
        );
        assert_eq!(got, [(0, ValueRef::Integer(-1)), (1, ValueRef::Text(b"a"))]);
        for bad in [
            &[3u8, 1, 15, 0xff][..],      // the body ends early
            &[3u8, 1, 15, 0xff, b'a', 0], // a byte left over
            &[3u8, 10, 15, b'a'],         // a reserved serial type
            &[9u8, 1],                    // the header past the record
            &[],
        ] {
            assert_eq!(pages::record_values(bad, |_, _| {}), None, "{bad:?}");
        }
    }

    /// A file whose record headers were damaged on disk: the scan with
    /// page reads ends as the SQL scan does (the same rows, or an error).
    #[test]
    fn damaged_records_end_as_sql_ends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let t = Table {
            page_size: 4096,
            types: vec![0; 11],
            extras: vec![],
            alias: None,
            added_late: false,
            rows: (0..200)
                .map(|i| (0..14).map(|c| Value::Text(format!("v{i}-{c}"))).collect())
                .collect(),
            deletes: vec![],
        };
        assert!(write(&t, &path));
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
                .unwrap();
        }
        let clean = both(&path);
        assert!(clean.0.as_ref().unwrap().rows_from_pages);
        let mut bytes = std::fs::read(&path).unwrap();
        // Rows 1 to 3 get a reserved serial type as the last of their
        // record header (the byte before the body, which starts with the
        // first two texts): their records no longer parse.
        let mut damaged = 0;
        for i in 1..4 {
            let body = format!("v{i}-0v{i}-1");
            let body = body.as_bytes();
            // Every copy: a page keeps the bytes of cells moved off it.
            let copies: Vec<usize> = (1..bytes.len() - body.len())
                .filter(|&at| &bytes[at..at + body.len()] == body)
                .collect();
            for at in copies {
                bytes[at - 1] = 10;
                damaged += 1;
            }
        }
        assert!(damaged >= 3);
        std::fs::write(&path, &bytes).unwrap();
        // SQLite finds the damage: the page read gave up on the records
        // and left them to SQL, which reports it, naming the file.
        let (pages, sql) = both(&path);
        let (Err(pages), Err(sql)) = (pages, sql) else {
            panic!("the damage went unnoticed");
        };
        assert_eq!(pages, sql);
        assert!(
            pages.contains("malformed") && pages.contains("state.db"),
            "{pages}"
        );
    }
}
