//! The `RunReport` component: what a finished runner session produced.

use serde::{Deserialize, Serialize};

/// One row of the runner's `run_reports` table, field for field (times as
/// Unix milliseconds, 0 meaning not set). Stored on its run's entity; a run
/// with several reports keeps the latest (by `created_at`, then `report_id`),
/// and earlier ones stay in the entity's history.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunReport {
    /// The report's id in `run_reports`.
    pub report_id: String,
    /// The run it reports on (the runner's `agent_id`), named as the Python
    /// engine names the report's field. Stored by position (postcard), so
    /// ledgers written when it was called `agent_id` read unchanged; JSON
    /// written then is read through the alias.
    #[serde(alias = "agent_id")]
    pub run_id: String,
    /// The runner request that started the session.
    pub request_id: String,
    /// `completed`, `crashed` or `timed_out`.
    pub exit_status: String,
    /// The commit the session ended on (full hash); empty when none.
    pub commit_hash: String,
    /// `git diff --stat` of the session's changes, as the runner recorded it.
    pub diff_stat: String,
    /// The tail of the session's standard output, as much as the runner kept.
    pub stdout_tail: String,
    /// The tail of the session's standard error, as much as the runner kept.
    pub stderr_tail: String,
    /// JSON text, never interpreted here.
    pub metadata_json: String,
    /// When the runner wrote the report, in Unix milliseconds; 0 when unset or unparseable.
    pub created_at_ms: i64,
}

impl RunReport {
    /// The order in which reports supersede each other.
    pub(crate) fn order_key(&self) -> (i64, &str) {
        (self.created_at_ms, &self.report_id)
    }
}
