//! Probes for tests that kill or wait on processes.

use std::path::Path;
use std::time::{Duration, Instant};

/// Whether process `pid` is alive; a zombie (state Z) is dead for our purpose.
/// Linux only: it reads `/proc/{pid}/stat`.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// Waits until `path` exists, polling every 20 ms; panics after 30 s.
pub fn wait_for(path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The live processes whose command line contains `marker` (Linux only:
/// it reads `/proc/*/cmdline`). Give a test's processes a unique marker
/// (`sleep 61.4242`) to find what it left running.
pub fn with_marker(marker: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(marker)
                })
                .unwrap_or(false)
                && alive(*pid)
        })
        .collect()
}

/// Kills (SIGKILL) every process [`with_marker`] finds, so that a failing
/// test leaves nothing behind.
pub fn kill_marked(marker: &str) {
    for pid in with_marker(marker) {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
}

/// The live processes whose environment holds `var` with a value starting
/// with `prefix` (Linux only: it reads `/proc/*/environ`, this user's
/// processes). A loop's jobs carry `AUTORESEARCH_WORKTREE={state}/slots/...`.
pub fn with_env_prefix(var: &str, prefix: &str) -> Vec<i32> {
    let needle = format!("{var}={prefix}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| {
                    env.split(|b| *b == 0)
                        .any(|v| v.starts_with(needle.as_bytes()))
                })
                .unwrap_or(false)
                && alive(*pid)
        })
        .collect()
}
