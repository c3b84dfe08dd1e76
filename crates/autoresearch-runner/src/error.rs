//! Errors of the runner ingest. Each names the file and what was being done.

use std::path::PathBuf;

/// Why a runner sync failed. On any error the ledger is left unchanged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// The runner database file does not exist.
    #[error("reading runner database {path}: no such file")]
    Missing {
        /// The file named.
        path: PathBuf,
    },
    /// The file is not a SQLite database.
    #[error("reading runner database {path}: not a SQLite database")]
    NotADatabase {
        /// The file named.
        path: PathBuf,
    },
    /// SQLite reports the database as corrupt.
    #[error("reading runner database {path}: the database is corrupt ({reason})")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// SQLite's message.
        reason: String,
    },
    /// The runner holds a lock that kept the read out; retrying later helps.
    #[error(
        "reading runner database {path}: the database is locked ({reason}); retry when the runner is idle"
    )]
    Locked {
        /// The database file.
        path: PathBuf,
        /// SQLite's message.
        reason: String,
    },
    /// A SQLite database without the runner's `agents` table.
    #[error(
        "reading runner database {path}: no `agents` table (is this archetype-runner's state.db?)"
    )]
    NoAgentsTable {
        /// The database file.
        path: PathBuf,
    },
    /// A runner table lacks a column the ingest needs (an older or newer schema).
    #[error("reading runner database {path}: table `{table}` has no column `{column}`")]
    MissingColumn {
        /// The database file.
        path: PathBuf,
        /// The table (`agents` or `run_reports`).
        table: &'static str,
        /// The missing column.
        column: &'static str,
    },
    /// Any other SQLite failure while reading.
    #[error("reading runner database {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// Reading or writing the world failed.
    #[error("ingesting {path} into world {world:?}: {source}")]
    Ledger {
        /// The database file being ingested.
        path: PathBuf,
        /// The world written.
        world: String,
        /// The ledger's error.
        #[source]
        source: autoresearch_core::Error,
    },
    /// The blocking thread that reads the database panicked or was cancelled,
    /// or handed back an impossible result.
    #[error("ingesting {path}: the reading thread failed: {reason}")]
    Thread {
        /// The database file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

impl IngestError {
    /// Classifies a SQLite error met while reading `path`.
    pub(crate) fn sqlite(path: &std::path::Path, source: rusqlite::Error) -> IngestError {
        use rusqlite::ErrorCode as C;
        let path = path.to_path_buf();
        if let rusqlite::Error::SqliteFailure(e, msg) = &source {
            let reason = msg.clone().unwrap_or_else(|| e.to_string());
            match e.code {
                C::NotADatabase => return IngestError::NotADatabase { path },
                C::DatabaseCorrupt => return IngestError::Corrupt { path, reason },
                C::DatabaseBusy | C::DatabaseLocked => return IngestError::Locked { path, reason },
                _ => {}
            }
        }
        IngestError::Sqlite { path, source }
    }
}
