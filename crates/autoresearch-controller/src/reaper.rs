//! Finding and killing every process a job left behind, not only its
//! process group: a `setsid` daemon leaves the group and is re-parented,
//! but it still carries the job's environment (`AUTORESEARCH_WORKTREE`, the
//! slot's path) or works in the slot. On Linux both are read from `/proc`
//! (processes of this user only); elsewhere only the group is killed.
//!
//! This is the one place a sandbox (a PID namespace, a cgroup) replaces:
//! [`kill_slot_processes`] is called before a slot is checked out for a job
//! and after every job, so that no process of a proposer is alive when an
//! evaluation starts.

use std::path::Path;

/// Kills the process group `pgid` (SIGKILL); an unknown group is fine.
pub fn kill_group(pgid: i32) {
    if pgid > 0 {
        // SAFETY: killpg has no memory-safety preconditions; an unknown
        // group yields ESRCH.
        unsafe {
            libc::killpg(pgid, libc::SIGKILL);
        }
    }
}

/// Kills (SIGKILL) every process whose environment names `slot` as its
/// `AUTORESEARCH_WORKTREE` or whose working directory is inside `slot`,
/// repeating until none is left (a process may fork while it is being
/// killed), for at most a second. Returns how many it killed.
pub fn kill_slot_processes(slot: &Path) -> usize {
    let mut killed = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        let found = slot_processes(slot);
        if found.is_empty() || std::time::Instant::now() > deadline {
            return killed;
        }
        for pid in &found {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe {
                libc::kill(*pid, libc::SIGKILL);
            }
        }
        killed += found.len();
        std::thread::sleep(std::time::Duration::from_millis(5));
        // Those re-parented to this process (a subreaper) are collected.
        crate::sandbox::reap(&found);
    }
}

/// The live processes that belong to `slot` (see [`kill_slot_processes`]).
#[cfg(target_os = "linux")]
pub fn slot_processes(slot: &Path) -> Vec<i32> {
    let me = std::process::id() as i32;
    let marker = {
        let mut m = b"AUTORESEARCH_WORKTREE=".to_vec();
        m.extend_from_slice(slot.as_os_str().as_encoded_bytes());
        m
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Some(tty) = live_tty(pid) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let dir = e.path();
        // A process working in the slot without a terminal is a job's
        // daemon; a shell the user opened there to look around is not.
        let in_slot =
            tty == 0 && std::fs::read_link(dir.join("cwd")).is_ok_and(|cwd| cwd.starts_with(slot));
        let marked = std::fs::read(dir.join("environ"))
            .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == marker.as_slice()));
        if in_slot || marked {
            pids.push(pid);
        }
    }
    pids
}

/// The controlling terminal (`tty_nr`, 0 for none) of a live process;
/// `None` for a zombie or a process gone.
#[cfg(target_os = "linux")]
fn live_tty(pid: i32) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command's closing parenthesis: state, ppid, pgrp, session, tty_nr.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    if fields.first()? == &"Z" {
        return None;
    }
    fields.get(4)?.parse().ok()
}

/// Without `/proc`, only the job's process group is killed.
#[cfg(not(target_os = "linux"))]
pub fn slot_processes(_slot: &Path) -> Vec<i32> {
    Vec::new()
}
