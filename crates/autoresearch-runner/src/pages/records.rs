//! A table's rows read from its pages: [`table_records`] walks the leaf
//! pages (and overflow chains) of a rowid table, [`record_values`] decodes
//! each record (SQLite's record format).

use super::{LEAF_TABLE, Spill, Tree, be16, be32, read_overflow, varint};
use rusqlite::Connection;
use rusqlite::types::ValueRef;

/// Calls `f` with the rowid and the record bytes of every row of the
/// rowid table whose B-tree is at `root`, in rowid order, reading its leaf
/// pages (found in `tree`, which must come from the same snapshot as the
/// connection's read transaction) again, one query a page. `Ok(false)`:
/// the pages are not what the walk understands or `f` returned false; the
/// caller then reads the rows with SQL (what `f` received is to be
/// dropped). Cost: one copy of each leaf page and of each record that
/// spills onto overflow pages; about a tenth of stepping through the rows.
pub(crate) fn table_records(
    conn: &Connection,
    tree: &Tree,
    root: u32,
    mut f: impl FnMut(i64, &[u8]) -> bool,
) -> rusqlite::Result<bool> {
    let Some(leaves) = tree.leaves_of(root) else {
        return Ok(false);
    };
    let usable = tree.usable;
    let max_local = usable - 35;
    let min_local = ((usable - 12) * 32 / 255) - 23;
    let mut pages = conn.prepare_cached("SELECT data FROM sqlite_dbpage WHERE pgno = ?1")?;
    let mut page = Vec::with_capacity(usable);
    let mut record = Vec::new();
    let mut last_rowid: Option<i64> = None;
    for pgno in leaves {
        page.clear();
        {
            let mut rows = pages.query([pgno])?;
            let Some(row) = rows.next()? else {
                return Ok(false);
            };
            let data = row.get_ref(0)?.as_blob()?;
            let Some(data) = data.get(..usable) else {
                return Ok(false);
            };
            page.extend_from_slice(data);
        }
        let h = if pgno == 1 { 100 } else { 0 };
        if page.get(h) != Some(&LEAF_TABLE) {
            return Ok(false);
        }
        let Some(count) = be16(&page, h + 3) else {
            return Ok(false);
        };
        for i in 0..count {
            let cell = (|| {
                let cell = be16(&page, h + 8 + 2 * i)?;
                let (len, a) = varint(&page, cell)?;
                let (rowid, b) = varint(&page, cell + a)?;
                Some((cell + a + b, usize::try_from(len).ok()?, rowid as i64))
            })();
            let Some((start, len, rowid)) = cell else {
                return Ok(false);
            };
            // Leaves in key order give ascending rowids.
            if last_rowid.is_some_and(|l| l >= rowid) {
                return Ok(false);
            }
            last_rowid = Some(rowid);
            let bytes = if len <= max_local {
                match page.get(start..start + len) {
                    Some(r) => r,
                    None => return Ok(false),
                }
            } else {
                let k = min_local + (len - min_local) % (usable - 4);
                let local = if k <= max_local { k } else { min_local };
                let (Some(head), Some(first_overflow)) =
                    (page.get(start..start + local), be32(&page, start + local))
                else {
                    return Ok(false);
                };
                let spill = Spill {
                    cell: 0,
                    local: Vec::new(),
                    first_overflow,
                    rest: len - local,
                };
                record.clear();
                record.extend_from_slice(head);
                if !read_overflow(&mut pages, usable, &spill, &mut record, tree.pages.len())? {
                    return Ok(false);
                }
                &record[..]
            };
            if !f(rowid, bytes) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Decodes a record (SQLite's record format, "Record Format" in
/// <https://sqlite.org/fileformat2.html>) of a UTF-8 database, calling
/// `keep(i, value)` for each field `i` in order. Returns the record's
/// number of fields; `None` for a record that does not parse (a reserved
/// serial type, a header or body past the bytes, bytes left over), after
/// which what `keep` received is to be dropped. A float that is NaN reads
/// as NULL, as SQLite reads it.
pub(crate) fn record_values<'r>(
    record: &'r [u8],
    mut keep: impl FnMut(usize, ValueRef<'r>),
) -> Option<usize> {
    let (header_len, mut at) = varint(record, 0)?;
    let header_len = usize::try_from(header_len).ok()?;
    if header_len > record.len() || at > header_len {
        return None;
    }
    let mut body = header_len;
    let mut n = 0;
    while at < header_len {
        let (serial, l) = varint(record, at)?;
        at += l;
        let size = match serial {
            0 | 8 | 9 => 0,
            1..=4 => serial as usize,
            5 => 6,
            6 | 7 => 8,
            10 | 11 => return None,
            n => usize::try_from((n - 12) / 2).ok()?,
        };
        let bytes = record.get(body..body.checked_add(size)?)?;
        body += size;
        keep(
            n,
            match serial {
                0 => ValueRef::Null,
                1..=6 => {
                    // Big-endian two's complement, sign-extended.
                    let mut v: i64 = if bytes[0] & 0x80 != 0 { -1 } else { 0 };
                    for b in bytes {
                        v = (v << 8) | i64::from(*b);
                    }
                    ValueRef::Integer(v)
                }
                7 => {
                    let f = f64::from_bits(u64::from_be_bytes(bytes.try_into().ok()?));
                    if f.is_nan() {
                        ValueRef::Null
                    } else {
                        ValueRef::Real(f)
                    }
                }
                8 => ValueRef::Integer(0),
                9 => ValueRef::Integer(1),
                s if s % 2 == 0 => ValueRef::Blob(bytes),
                _ => ValueRef::Text(bytes),
            },
        );
        n += 1;
    }
    (at == header_len && body == record.len()).then_some(n)
}
