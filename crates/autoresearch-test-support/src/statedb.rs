//! archetype-runner's `state.db`: its schema (the `agents` and
//! `run_reports` tables as the runner creates them) and builders of real
//! SQLite files in temp dirs, with rows added and changed as the runner
//! would.

use rusqlite::{Connection, params};
use std::path::{Path, PathBuf};

/// The runner's `agents` table.
pub const AGENTS: &str = "CREATE TABLE agents (
    agent_id TEXT PRIMARY KEY,
    vm_name TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'booting',
    harness TEXT NOT NULL,
    repo_url TEXT NOT NULL,
    branch TEXT NOT NULL,
    task TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    agent_name TEXT NOT NULL DEFAULT '',
    workspace_path TEXT NOT NULL DEFAULT ''
)";

/// The same columns without NOT NULL, so rows can hold the NULLs old files have.
pub const AGENTS_NULLABLE: &str = "CREATE TABLE agents (
    agent_id TEXT PRIMARY KEY, vm_name TEXT, status TEXT, harness TEXT,
    repo_url TEXT, branch TEXT, task TEXT, started_at TEXT, finished_at TEXT,
    agent_name TEXT, workspace_path TEXT
)";

/// The runner's `run_reports` table.
pub const REPORTS: &str = "CREATE TABLE IF NOT EXISTS run_reports (
    report_id     TEXT PRIMARY KEY,
    agent_id      TEXT NOT NULL,
    request_id    TEXT NOT NULL DEFAULT '',
    exit_status   TEXT NOT NULL,
    commit_hash   TEXT NOT NULL DEFAULT '',
    diff_stat     TEXT NOT NULL DEFAULT '',
    stdout_tail   TEXT NOT NULL DEFAULT '',
    stderr_tail   TEXT NOT NULL DEFAULT '',
    metadata_json TEXT NOT NULL DEFAULT '{}',
    created_at    TEXT NOT NULL
)";

/// A state.db in a temp dir, with a connection open on it.
pub struct Db {
    /// The temp directory holding the file; dropping the fixture removes it.
    pub dir: tempfile::TempDir,
    /// The state.db file (`state.db` in `dir`).
    pub path: PathBuf,
    /// A connection open on it, for writing rows as the runner would.
    pub conn: Connection,
}

/// A state.db in WAL mode with the given schema statements, in a temp dir of
/// its own.
pub fn db(schema: &[&str]) -> Db {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let conn = create_wal(&path, schema);
    Db { dir, path, conn }
}

/// Creates the SQLite file `path` in WAL mode (as the runner keeps it) and
/// runs the schema statements; the open connection.
pub fn create_wal(path: &Path, schema: &[&str]) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.pragma_update(None, "journal_mode", "wal").unwrap();
    for s in schema {
        conn.execute_batch(s).unwrap();
    }
    conn
}

impl Db {
    /// Inserts agent `id` (vm-1, claude-code, branch main, not finished).
    pub fn agent(&self, id: &str, status: &str, started: &str, agent_name: &str) {
        self.conn
            .execute(
                "INSERT INTO agents VALUES (?1, 'vm-1', ?2, 'claude-code', 'git@x:r.git', 'main', 'make it faster', ?3, NULL, ?4, '/ws/1')",
                params![id, status, started, agent_name],
            )
            .unwrap();
    }

    /// Sets one column of agent `id`.
    pub fn set(&self, id: &str, column: &str, value: Option<&str>) {
        self.conn
            .execute(
                &format!("UPDATE agents SET {column} = ?1 WHERE agent_id = ?2"),
                params![value, id],
            )
            .unwrap();
    }

    /// Inserts a completed run report of agent `agent_id`.
    pub fn report(&self, report_id: &str, agent_id: &str, commit: &str, created: &str) {
        self.conn
            .execute(
                "INSERT INTO run_reports (report_id, agent_id, exit_status, commit_hash, created_at) VALUES (?1, ?2, 'completed', ?3, ?4)",
                params![report_id, agent_id, commit, created],
            )
            .unwrap();
    }
}
