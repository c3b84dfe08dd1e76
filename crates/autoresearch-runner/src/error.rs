//! Errors of the runner ingest. Each names the file and what was being done.

use std::path::PathBuf;

/// Why a runner sync failed. On any error the ledger is left unchanged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    #[error("reading runner database {path}: no such file")]
    Missing { path: PathBuf },
    #[error("reading runner database {path}: not a SQLite database")]
    NotADatabase { path: PathBuf },
    #[error("reading runner database {path}: the database is corrupt ({reason})")]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "reading runner database {path}: the database is locked ({reason}); retry when the runner is idle"
    )]
    Locked { path: PathBuf, reason: String },
    #[error(
        "reading runner database {path}: no `agents` table (is this archetype-runner's state.db?)"
    )]
    NoAgentsTable { path: PathBuf },
    #[error("reading runner database {path}: table `{table}` has no column `{column}`")]
    MissingColumn {
        path: PathBuf,
        table: &'static str,
        column: &'static str,
    },
    #[error("reading runner database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("ingesting {path} into world {world:?}: {source}")]
    Ledger {
        path: PathBuf,
        world: String,
        #[source]
        source: autoresearch_core::Error,
    },
    #[error("ingesting {path}: the reading thread failed: {reason}")]
    Thread { path: PathBuf, reason: String },
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
