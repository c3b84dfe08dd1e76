//! What a proposer tried, in its own words, so that the idea travels with
//! the attempt: into the candidate's commit message, the ledger (component
//! [`Description`] on the run's entity), `log`, the results files and the
//! chart's labels. The comparator's reason is something else (why the
//! attempt was kept or not) and stays in the [`Outcome`](crate::Outcome).
//!
//! Where it comes from, first found wins: the messages of the commits the
//! proposer made; else the file named by [`DESCRIPTION_ENV`] that the
//! proposer wrote; else the last `description:` line of its standard output
//! ([`description_line`]); else a summary of its change ([`change_summary`]).
//! The rule is here so that every executor applies the same one.

use serde::{Deserialize, Serialize};

/// The environment variable that names, for a proposer, a file it may write
/// its description to (outside the candidate's tree: it is never committed).
pub const DESCRIPTION_ENV: &str = "AUTORESEARCH_DESCRIPTION";

/// The prefix of an output line that describes the change.
pub const DESCRIPTION_PREFIX: &str = "description:";

/// The longest description kept, in bytes; longer text is cut at a
/// character boundary.
pub const DESCRIPTION_MAX: usize = 4096;

/// A run's description, stored as component `Description` on the run's
/// entity when the loop records its candidate.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Description {
    /// The run described.
    pub run_id: String,
    /// The text: a commit message's shape (a subject line, then a body).
    pub text: String,
}

impl Description {
    /// The first line (the subject), trimmed.
    pub fn subject(&self) -> &str {
        self.text.lines().next().unwrap_or("").trim()
    }
}

/// `text` made fit to store: trimmed, control characters other than line
/// breaks and tabs removed, at most [`DESCRIPTION_MAX`] bytes; `None` when
/// nothing is left.
pub fn clean_description(text: &str) -> Option<String> {
    let cleaned: String = text
        .chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\t'))
        .collect();
    let trimmed = cleaned.trim();
    if trimmed.is_empty() {
        return None;
    }
    let mut end = trimmed.len().min(DESCRIPTION_MAX);
    while !trimmed.is_char_boundary(end) {
        end -= 1;
    }
    Some(trimmed[..end].trim_end().to_string())
}

/// The text of the last line of `output` that starts with
/// [`DESCRIPTION_PREFIX`] (case-insensitive, after leading blanks), cleaned;
/// `None` when there is none or it is empty.
///
/// ```
/// use autoresearch_core::description::description_line;
/// let out = "thinking...\nDescription: unroll the inner loop\ndone\n";
/// assert_eq!(description_line(out).as_deref(), Some("unroll the inner loop"));
/// ```
pub fn description_line(output: &str) -> Option<String> {
    output
        .lines()
        .rev()
        .filter_map(|line| {
            let line = line.trim_start();
            let head = line.get(..DESCRIPTION_PREFIX.len())?;
            head.eq_ignore_ascii_case(DESCRIPTION_PREFIX)
                .then(|| &line[DESCRIPTION_PREFIX.len()..])
        })
        .find_map(clean_description)
}

/// One changed file of a diff stat: its path, lines added and removed
/// (`None` for a binary file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileChange {
    /// The path, relative to the repository's root.
    pub path: String,
    /// Lines added and removed; `None` for a binary file.
    pub lines: Option<(u64, u64)>,
}

/// A one-line summary of a change for a proposer that said nothing about
/// it: `edit tsp.py (+12 -3)`, `edit 4 files: a.py, b.py, c.py and 1 more (+20 -4)`.
///
/// ```
/// use autoresearch_core::description::{FileChange, change_summary};
/// let one = [FileChange { path: "tsp.py".into(), lines: Some((12, 3)) }];
/// assert_eq!(change_summary(&one), "edit tsp.py (+12 -3)");
/// ```
pub fn change_summary(files: &[FileChange]) -> String {
    const NAMED: usize = 3;
    let (added, removed) = files
        .iter()
        .filter_map(|f| f.lines)
        .fold((0, 0), |(a, r), (x, y)| (a + x, r + y));
    let mut names: Vec<&str> = files.iter().take(NAMED).map(|f| f.path.as_str()).collect();
    let more = files.len().saturating_sub(NAMED);
    let listed = match files.len() {
        0 => return "no change".to_string(),
        1 => names.remove(0).to_string(),
        n => {
            let mut s = format!("{n} files: {}", names.join(", "));
            if more > 0 {
                s.push_str(&format!(" and {more} more"));
            }
            s
        }
    };
    format!("edit {listed} (+{added} -{removed})")
}
