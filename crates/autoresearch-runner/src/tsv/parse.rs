//! Reading a results file: its encoding, its layout (columns, metric
//! columns and their decimals) and its rows, with the malformed ones named.

use super::*;

/// Decodes a results file: UTF-8 (a BOM is skipped), or UTF-16 with a BOM.
/// Returns the text and the encoding's name.
pub fn decode(bytes: &[u8]) -> Result<(String, &'static str), String> {
    fn utf16(
        b: &[u8],
        unit: fn([u8; 2]) -> u16,
        name: &'static str,
    ) -> Result<(String, &'static str), String> {
        if !b.len().is_multiple_of(2) {
            return Err(format!("{name}: an odd number of bytes"));
        }
        let units = b.chunks_exact(2).map(|c| unit([c[0], c[1]]));
        char::decode_utf16(units)
            .collect::<Result<String, _>>()
            .map(|s| (s, name))
            .map_err(|e| format!("not valid {name}: {e}"))
    }
    if let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF") {
        return std::str::from_utf8(rest)
            .map(|s| (s.to_string(), "UTF-8 with BOM"))
            .map_err(|e| format!("not valid UTF-8 after its byte-order mark: {e}"));
    }
    if let Some(rest) = bytes.strip_prefix(b"\xFF\xFE") {
        return utf16(rest, u16::from_le_bytes, "UTF-16LE with BOM");
    }
    if let Some(rest) = bytes.strip_prefix(b"\xFE\xFF") {
        return utf16(rest, u16::from_be_bytes, "UTF-16BE with BOM");
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok((s.to_string(), "UTF-8")),
        Err(e) => Err(format!(
            "neither UTF-8 ({e}) nor UTF-16 with a byte-order mark; save it as UTF-8"
        )),
    }
}

/// The layout of a results file, kept in `Experiment.metadata_json`.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    /// Every header column, in order.
    pub columns: Vec<String>,
    /// The metric column: the one a comparator would decide on.
    pub metric: String,
    /// Which way the metric improves; recorded, not interpreted.
    pub direction: Direction,
    /// Decimal places seen per numeric column, to write numbers back alike.
    pub decimals: BTreeMap<String, usize>,
    /// `"\r\n"` for a CRLF file, else `"\n"`.
    pub line_end: String,
    /// Whether the last line ends with a line break.
    pub final_newline: bool,
    /// Lines that are not rows, after how many rows they come.
    pub kept: Vec<(usize, String)>,
    /// How many of `kept` come before the header.
    pub preamble: usize,
}

impl Layout {
    pub(super) fn metadata(&self) -> Value {
        json!({
            "source": EVALUATOR,
            "columns": self.columns,
            "metric": self.metric,
            "direction": self.direction.long(),
            "decimals": self.decimals,
            "line_end": self.line_end,
            "final_newline": self.final_newline,
            "kept_lines": self.kept,
            "preamble": self.preamble,
        })
    }
}

/// One well-formed row.
#[derive(Clone, Debug, PartialEq)]
pub struct TsvRow {
    /// The row's line number in the file, from 1.
    pub line: usize,
    /// The commit as written in the file (often a 7-character short hash).
    pub commit: String,
    /// `keep`, `discard` or `crash`.
    pub status: OutcomeStatus,
    /// Value columns as numbers; a non-numeric value in a non-metric column
    /// is kept as text. A crash row has no metric, and no zeros.
    pub values: Vec<(String, Value)>,
    /// The text of values that would not be written back alike.
    pub texts: Vec<(String, String)>,
    /// The `description` column; empty when the file has none.
    pub description: String,
}

impl TsvRow {
    /// The row's identity: its commit, status, description and values (a
    /// crash row's values are placeholders, not part of it). Built alike
    /// for a run imported earlier ([`imported_key`]).
    pub(super) fn key(&self) -> String {
        row_key(&self.commit, &self.status, &self.description, &self.values)
    }

    pub(super) fn outputs(&self) -> Map<String, Value> {
        let mut out: Map<String, Value> = self.values.iter().cloned().collect();
        out.insert(DESCRIPTION.to_string(), json!(self.description));
        if !self.texts.is_empty() {
            let texts = self
                .texts
                .iter()
                .map(|(k, t)| (k.clone(), json!(t)))
                .collect();
            out.insert(TEXT.to_string(), Value::Object(texts));
        }
        out
    }
}

pub(super) fn row_key(
    commit: &str,
    status: &OutcomeStatus,
    description: &str,
    values: &[(String, Value)],
) -> String {
    let mut key = format!("{commit}\u{1f}{status}\u{1f}{description}");
    if *status != OutcomeStatus::Crash {
        let mut vals: Vec<(&String, String)> = values
            .iter()
            .filter(|(k, _)| !k.starts_with('_'))
            .map(|(k, v)| {
                let text = match v {
                    Value::Number(n) => n.as_f64().map_or(n.to_string(), fmt_f64),
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k, text)
            })
            .collect();
        vals.sort();
        for (k, v) in vals {
            key.push('\u{1f}');
            key.push_str(k);
            key.push('=');
            key.push_str(&v);
        }
    }
    key
}

/// A parsed file.
#[derive(Clone, Debug)]
pub struct Parsed {
    /// The header's layout.
    pub layout: Layout,
    /// The well-formed rows, in file order.
    pub rows: Vec<TsvRow>,
    /// The rows that are not, in file order.
    pub malformed: Vec<Malformed>,
    /// Lines that are not rows, by line number.
    pub kept_lines: Vec<KeptLine>,
    /// When no row could be read: the columns that hold numbers.
    pub hint: Option<String>,
}

pub(super) fn decimals(text: &str) -> usize {
    if text.contains(['e', 'E']) {
        return 0;
    }
    text.split_once('.').map_or(0, |(_, f)| {
        f.chars().take_while(char::is_ascii_digit).count()
    })
}

/// A row split into its fields, before the metric is known.
pub(super) struct RawRow<'a> {
    line: usize,
    fields: Vec<&'a str>,
}

/// Parses results.tsv text. Errors (as a reason) only on an unusable header;
/// bad rows are collected in `malformed`. `metric`: the metric column, or
/// `None` for the first value column (the second, in karpathy's file).
pub fn parse(
    text: &str,
    metric: Option<&str>,
    direction: Option<Direction>,
) -> Result<Parsed, String> {
    let direction = direction.unwrap_or_default();
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let final_newline = text.ends_with('\n');
    let body = text.strip_suffix('\n').unwrap_or(text);
    let mut kept_lines = Vec::new();
    let mut kept = Vec::new();
    let mut header = None;
    let mut line_end = "\n";
    let mut raw = Vec::new();
    for (i, l) in body.split('\n').enumerate() {
        let line = i + 1;
        let crlf = l.ends_with('\r');
        let l = l.strip_suffix('\r').unwrap_or(l);
        let t = l.trim();
        let is_row = !t.is_empty() && !t.starts_with('#') && l.contains('\t');
        match header {
            None if is_row || (!t.is_empty() && !t.starts_with('#')) => {
                header = Some((line, l));
                if crlf {
                    line_end = "\r\n";
                }
            }
            Some((_, h)) if is_row && l != h => raw.push(RawRow {
                line,
                fields: l.split('\t').collect(),
            }),
            _ => {
                kept.push((raw.len(), l.to_string()));
                kept_lines.push(KeptLine {
                    line,
                    text: l.to_string(),
                });
            }
        }
    }
    let (header_line, header) =
        header.ok_or("the file is empty (expected a header like commit<TAB>val_bpb<TAB>...)")?;
    let columns: Vec<String> = header.split('\t').map(|c| c.trim().to_string()).collect();
    for need in [COMMIT, STATUS] {
        if !columns.iter().any(|c| c == need) {
            return Err(format!(
                "the header has no `{need}` column (header: {header:?})"
            ));
        }
    }
    let mut uniq = HashSet::new();
    if let Some(dup) = columns.iter().find(|c| !uniq.insert(c.as_str())) {
        return Err(format!("the header names column `{dup}` twice"));
    }
    let preamble = kept_lines
        .iter()
        .filter(|k: &&KeptLine| k.line < header_line)
        .count();
    let pos = |name: &str| columns.iter().position(|c| c == name);
    let (commit_at, status_at) = (pos(COMMIT).unwrap_or(0), pos(STATUS).unwrap_or(0));
    let value_cols: Vec<(usize, &String)> = columns
        .iter()
        .enumerate()
        .filter(|(_, c)| ![COMMIT, STATUS, DESCRIPTION].contains(&c.as_str()))
        .collect();
    let metric = match metric {
        Some(m) => m.to_string(),
        None => value_cols
            .first()
            .map(|(_, c)| (*c).clone())
            .or_else(|| columns.get(1).cloned())
            .ok_or("the header has no second column to use as the metric")?,
    };
    if [COMMIT, STATUS, DESCRIPTION].contains(&metric.as_str()) || !columns.contains(&metric) {
        return Err(format!(
            "metric column `{metric}` is not a numeric column of the header {header:?}"
        ));
    }
    let mut decimals_of: BTreeMap<String, usize> = BTreeMap::new();
    for r in raw.iter().filter(|r| r.fields.len() == columns.len()) {
        for (i, c) in &value_cols {
            let t = r.fields[*i].trim();
            if parse_f64(t).is_some_and(f64::is_finite) {
                let e = decimals_of.entry((*c).clone()).or_insert(0);
                *e = (*e).max(decimals(t));
            }
        }
    }
    let layout = Layout {
        columns: columns.clone(),
        metric,
        direction,
        decimals: decimals_of,
        line_end: line_end.to_string(),
        final_newline,
        kept,
        preamble,
    };
    let mut rows = Vec::with_capacity(raw.len());
    let mut malformed = Vec::new();
    for r in &raw {
        match parse_row(&layout, commit_at, status_at, r) {
            Ok(row) => rows.push(row),
            Err(reason) => malformed.push(Malformed {
                line: r.line,
                reason,
            }),
        }
    }
    // Not one row read: say which columns would have been numbers (when
    // the metric column is not one of them: otherwise the rows failed for
    // the reasons `malformed` gives, not for the metric).
    let mut hint = None;
    if rows.is_empty() && !malformed.is_empty() {
        let numeric: Vec<&str> = value_cols
            .iter()
            .filter(|(i, _)| {
                raw.iter()
                    .filter(|r| r.fields.len() == columns.len())
                    .all(|r| parse_f64(r.fields[*i].trim()).is_some())
            })
            .map(|(_, c)| c.as_str())
            .collect();
        if !numeric.is_empty() && !numeric.contains(&layout.metric.as_str()) {
            hint = Some(format!(
                "no row has a number in the metric column {}; columns holding numbers: {} (choose one with --metric)",
                layout.metric,
                numeric.join(", ")
            ));
        }
    }
    Ok(Parsed {
        layout,
        rows,
        malformed,
        kept_lines,
        hint,
    })
}

pub(super) fn parse_row(
    layout: &Layout,
    commit_at: usize,
    status_at: usize,
    r: &RawRow,
) -> Result<TsvRow, String> {
    let fields = &r.fields;
    if fields.len() != layout.columns.len() {
        return Err(format!(
            "{} columns, the header has {}",
            fields.len(),
            layout.columns.len()
        ));
    }
    let commit = fields[commit_at].trim().to_string();
    let word = fields[status_at].trim();
    let status = OutcomeStatus::from_word(word);
    let description = layout
        .columns
        .iter()
        .position(|c| c == DESCRIPTION)
        .map_or("", |i| fields[i])
        .to_string();
    if commit.is_empty() {
        return Err("empty commit".to_string());
    }
    if !matches!(
        status,
        OutcomeStatus::Keep | OutcomeStatus::Discard | OutcomeStatus::Crash
    ) {
        return Err(format!("status {word:?} is not keep, discard or crash"));
    }
    let crash = status == OutcomeStatus::Crash;
    let mut values = Vec::new();
    let mut texts = Vec::new();
    for (i, col) in layout.columns.iter().enumerate() {
        if [COMMIT, STATUS, DESCRIPTION].contains(&col.as_str()) {
            continue;
        }
        let raw = fields[i];
        let t = raw.trim();
        let is_metric = col == &layout.metric;
        match parse_f64(t) {
            // A crash has no score: its metric and its zeros are placeholders.
            Some(v) if crash && (is_metric || v == 0.0) => {
                texts.push((col.clone(), raw.to_string()));
            }
            Some(v) if v.is_finite() => {
                values.push((col.clone(), json!(v)));
                let places = layout.decimals.get(col).copied().unwrap_or(0);
                if fmt_f64_places(v, places) != raw {
                    texts.push((col.clone(), raw.to_string()));
                }
            }
            _ if is_metric && !crash => {
                return Err(format!("metric {col} {t:?} is not a number"));
            }
            _ if raw.is_empty() => {}
            _ if crash => texts.push((col.clone(), raw.to_string())),
            _ => values.push((col.clone(), json!(raw))),
        }
    }
    Ok(TsvRow {
        line: r.line,
        commit,
        status,
        values,
        texts,
        description,
    })
}

/// The name a new row's run gets: the line it was first imported from,
/// `{experiment}-tsv-L{line}` (as earlier versions named every row), with a
/// `-2`, `-3`... when a row imported before already has that name. Only a
/// name: rows are matched by content on re-import, never by this id.
pub fn run_id_for(experiment: &str, line: usize) -> String {
    format!("{experiment}-tsv-L{line}")
}
