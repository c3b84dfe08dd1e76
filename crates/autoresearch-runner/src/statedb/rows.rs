//! The rows a sync reads from a runner database: their columns, their
//! text, and their fingerprints (the hash of their raw values).

use rusqlite::Row;
use rusqlite::types::ValueRef;

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
pub(super) fn encode(v: ValueRef<'_>, buf: &mut Vec<u8>) {
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
pub(super) fn digest(buf: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(buf).max(1)
}

/// A row read in one pass: its text and fingerprint together. Without
/// `buf` the fingerprint is left 0 for the caller to fill in (from the
/// table's pages), and the values are not copied a second time for it.
pub(super) fn new_agent_row(
    row: &Row<'_>,
    from: usize,
    buf: Option<&mut Vec<u8>>,
) -> rusqlite::Result<AgentRow> {
    let mut values = [ValueRef::Null; 11];
    for (i, v) in values.iter_mut().enumerate() {
        *v = row.get_ref(from + i)?;
    }
    Ok(agent_row(&values, buf))
}

/// An `agents` row from its values (in [`AGENT_COLUMNS`] order), read
/// with SQL or from the table's pages: the same values give the same row.
/// Without `buf` the fingerprint is left 0 for the caller to fill in.
pub(super) fn agent_row(values: &[ValueRef<'_>; 11], mut buf: Option<&mut Vec<u8>>) -> AgentRow {
    use std::fmt::Write;
    if let Some(buf) = buf.as_deref_mut() {
        buf.clear();
    }
    // The values first, to size the text once: a row is longer than any
    // fixed guess often enough that growing it cost a copy per row.
    let mut len = 0;
    for v in values {
        len += match v {
            ValueRef::Null => 0,
            // At most 20 digits and a sign; a float's shortest rendering
            // rarely more (and it only grows the text if it is).
            ValueRef::Integer(_) | ValueRef::Real(_) => 24,
            ValueRef::Text(b) | ValueRef::Blob(b) => b.len(),
        };
    }
    let mut text = String::with_capacity(len);
    let mut spans = [None; 11];
    for (&v, span) in values.iter().zip(spans.iter_mut()) {
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
    AgentRow {
        text,
        spans,
        fp: buf.map_or(0, |b| digest(b)),
    }
}

/// Fingerprint of a row's raw values, never 0 (0 means "unknown").
pub(super) fn fingerprint(row: &Row<'_>, n: usize, buf: &mut Vec<u8>) -> rusqlite::Result<u64> {
    buf.clear();
    for i in 0..n {
        encode(row.get_ref(i)?, buf);
    }
    Ok(digest(buf))
}

pub(super) fn key_text<'r>(row: &'r Row<'_>, i: usize) -> rusqlite::Result<Option<&'r str>> {
    Ok(match row.get_ref(i)? {
        // An empty id names nothing: such a row is skipped, as a NULL one.
        ValueRef::Text(b) if !b.is_empty() => std::str::from_utf8(b).ok(),
        _ => None,
    })
}

pub(super) fn report_row(row: &Row<'_>, fp: u64) -> rusqlite::Result<ReportRow> {
    let mut cols: [Option<String>; 10] = Default::default();
    for (i, c) in cols.iter_mut().enumerate() {
        *c = owned(row.get_ref(i)?);
    }
    Ok(ReportRow { cols, fp })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_reads_as_owned_renders_each_value_with_the_same_fingerprint() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let long = "x".repeat(1000);
        // Every storage class, a long text (past any fixed first guess),
        // and a blob that is not UTF-8.
        let sql = "SELECT 'a', NULL, -9223372036854775808, 2.5e-300, X'00FF61', ?1, \
                   '', 'ü-ñ 🚀', 42, X'6869', 1e308";
        let mut stmt = conn.prepare(sql).unwrap();
        let mut rows = stmt.query([&long]).unwrap();
        let row = rows.next().unwrap().unwrap();
        let mut buf = Vec::new();
        let agent = new_agent_row(row, 0, Some(&mut buf)).unwrap();
        for i in 0..11 {
            let expected = owned(row.get_ref(i).unwrap());
            assert_eq!(agent.get(i), expected.as_deref(), "column {i}");
        }
        assert_eq!(agent.get(5), Some(long.as_str()));
        let mut again = Vec::new();
        assert_eq!(agent.fp, fingerprint(row, 11, &mut again).unwrap());
        // Without a buffer the fingerprint is left for the caller.
        assert_eq!(new_agent_row(row, 0, None).unwrap().fp, 0);
    }
}
