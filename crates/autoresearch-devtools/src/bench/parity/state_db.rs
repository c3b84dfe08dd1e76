//! The workload's input: a runner `state.db` of `bench.py`'s shape, and the
//! seeded choices of the update ticks.

use anyhow::Result;
use std::collections::HashMap;
use std::path::Path;

/// A small deterministic generator (splitmix64).
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(super) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// `k` distinct indexes below `n` (partial Fisher-Yates over `pool`).
    pub(super) fn sample(&mut self, pool: &mut [usize], k: usize) -> Vec<usize> {
        let k = k.min(pool.len());
        for i in 0..k {
            let j = i + self.below(pool.len() - i);
            pool.swap(i, j);
        }
        pool[..k].to_vec()
    }
}

pub(super) const STATUSES: [&str; 5] = ["booting", "running", "stopping", "stopped", "crashed"];
pub(super) const HARNESSES: [&str; 3] = ["claude-code", "opencode", "hermes"];
pub(super) const EXPERIMENTS: [&str; 5] = [
    "nanogpt-speedrun",
    "kernel-tune",
    "sat-solver",
    "rust-port",
    "docs-fix",
];
pub(super) const TASK_WORDS: &str = "optimize reduce latency refactor the training loop add tests fix flaky \
    benchmark port module to rust improve throughput profile memory usage \
    tighten error handling document public api";

/// Writes the `agents` table `bench.py` writes (same columns, same value
/// shapes and status weights; this generator's own random draws).
pub(super) fn make_state_db(path: &Path, n: usize, seed: u64) -> Result<HashMap<String, usize>> {
    let words: Vec<&str> = TASK_WORDS.split_whitespace().collect();
    let mut rng = Rng(seed);
    let mut conn = rusqlite::Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "wal")?;
    conn.execute_batch(
        "CREATE TABLE agents (
            agent_id TEXT PRIMARY KEY, vm_name TEXT NOT NULL, status TEXT NOT NULL,
            harness TEXT NOT NULL, repo_url TEXT NOT NULL, branch TEXT NOT NULL,
            task TEXT NOT NULL, started_at TEXT NOT NULL, finished_at TEXT,
            agent_name TEXT NOT NULL, workspace_path TEXT NOT NULL)",
    )?;
    let mut counts = HashMap::new();
    let tx = conn.transaction()?;
    {
        let mut stmt =
            tx.prepare("INSERT INTO agents VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)")?;
        for i in 0..n {
            let exp = EXPERIMENTS[rng.below(EXPERIMENTS.len())];
            let harness = HARNESSES[rng.below(HARNESSES.len())];
            // Weights 1, 4, 1, 3, 1 as bench.py.
            let status = match rng.below(10) {
                0 => "booting",
                1..=4 => "running",
                5 => "stopping",
                6..=8 => "stopped",
                _ => "crashed",
            };
            *counts.entry(status.to_string()).or_default() += 1;
            let agent_id = format!("{:016x}-{i:07}", rng.next());
            let started = 37 * i as i64; // seconds after 2026-01-01T00:00:00Z
            let started_ms = rng.below(1000);
            let iso = |secs: i64, ms: usize| {
                let days = secs / 86_400;
                let s = secs % 86_400;
                // Days since 2026-01-01 fit in January-style day counting
                // only for small n; a civil date keeps every row valid.
                let (y, m, d) = civil_from_days(days);
                format!(
                    "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}000+00:00",
                    s / 3600,
                    (s / 60) % 60,
                    s % 60
                )
            };
            let finished = matches!(status, "stopped" | "crashed")
                .then(|| iso(started + 60 + rng.below(7140) as i64, started_ms));
            let task_len = 6 + rng.below(14);
            let task: Vec<&str> = (0..task_len)
                .map(|_| words[rng.below(words.len())])
                .collect();
            stmt.execute(rusqlite::params![
                agent_id,
                format!("vm-{exp}-{i:07}"),
                status,
                harness,
                format!("https://github.com/example/{exp}.git"),
                format!("auto/{exp}/{}", i % 97),
                task.join(" "),
                iso(started, started_ms),
                finished,
                format!("{exp}-{harness}"),
                format!("/var/lib/archetype-runner/workspaces/{agent_id}"),
            ])?;
        }
    }
    tx.commit()?;
    Ok(counts)
}

/// (year, month, day) of a day count since 2026-01-01 (Howard Hinnant's
/// `civil_from_days`, shifted).
pub(super) fn civil_from_days(days_since_2026: i64) -> (i64, i64, i64) {
    let z = days_since_2026 + 20_454 + 719_468; // 2026-01-01 is day 20454 of the Unix epoch
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

pub(super) fn next_status(s: &str) -> &'static str {
    let i = STATUSES.iter().position(|x| *x == s).unwrap_or(0);
    STATUSES[(i + 1) % STATUSES.len()]
}
