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
