//! The CPU time of one job's process tree, measured per job (so that jobs
//! running at once in one controller do not mix).
//!
//! - A job run directly: its process is waited for without being reaped
//!   (`waitid(2)` with `WNOWAIT`), its accounting read from
//!   `/proc/PID/stat` while it is a zombie, and only then reaped by its
//!   owner. A zombie's `utime + stime` is its own CPU time and `cutime +
//!   cstime` that of every descendant it (or they) waited for, as
//!   `getrusage(RUSAGE_CHILDREN)` would count them for a process of its own.
//! - A job in the bubblewrap sandbox: bubblewrap does not reap its PID
//!   namespace's init, so that time never reaches a process the controller
//!   waits for. The job's command runs instead under a small shell
//!   ([`with_times`]) that waits for it and writes the shell's `times`
//!   (the same children's user and system time) to a file descriptor the
//!   command itself does not inherit; [`read_times`] reads it back. A job
//!   killed before it ends writes none (its CPU time is then unknown).

use std::time::Duration;

/// Blocks until process `pid`, a child of this process, has exited,
/// leaving it unreaped. Errors: `pid` is not a child (already reaped).
pub fn wait_exited(pid: u32) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    loop {
        // SAFETY: waitid writes only into the zeroed siginfo we own; with
        // WNOWAIT it leaves the child waitable for its owner.
        let rc = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOWAIT)
        };
        if rc == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        Err(std::io::Error::other("waiting without reaping needs Linux"))
    }
}

/// The CPU time (user + system) of exited, unreaped process `pid` and of
/// its waited-for descendants; `None` when `/proc/PID/stat` cannot be read.
pub fn zombie_cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = stat_cpu_ticks(&stat)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz <= 0 {
        return None;
    }
    Some(Duration::from_secs_f64(ticks as f64 / hz as f64))
}

/// The descriptor [`with_times`] writes to (set up by the executor).
pub const TIMES_FD: i32 = 9;

/// `command` run by a shell that waits for it, then writes its children's
/// CPU times (`times`) to descriptor [`TIMES_FD`] and exits with the
/// command's status. The command runs with that descriptor closed, so
/// nothing it starts can write there.
pub fn with_times(command: &str) -> String {
    let quoted = command.replace('\'', r"'\''");
    format!("sh -c '{quoted}' {TIMES_FD}>&-; s=$?; times >&{TIMES_FD} 2>/dev/null; exit $s")
}

/// The children's user + system time in what [`with_times`] wrote
/// (`times`: a line for the shell, then one for its children, each
/// `XmY.YYYs XmY.YYYs`); `None` when there is none to read.
pub fn read_times(text: &str) -> Option<Duration> {
    autoresearch_core::cost::shell_times_children(text)
}

/// `utime + stime + cutime + cstime` (fields 14 to 17 of `proc(5)`'s
/// `/proc/PID/stat`), in clock ticks. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted after its last `)`.
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (state): field n is at index n - 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    (11..=14)
        .map(|i| fields.get(i)?.parse::<i64>().ok().map(|v| v.max(0) as u64))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_four_time_fields_after_the_command_name() {
        // A command name with a space and a parenthesis, as proc(5) allows.
        let stat = "4242 (sh (x) y) Z 1 4242 4242 0 -1 4194564 10 20 0 0 7 3 15 5 20 0 1 0 100 0 0";
        assert_eq!(stat_cpu_ticks(stat), Some(7 + 3 + 15 + 5));
        assert_eq!(stat_cpu_ticks("garbage"), None);
        assert_eq!(stat_cpu_ticks("1 (sh) Z 1 2"), None);
    }

    #[test]
    fn times_output_is_read_and_the_wrapper_keeps_status_and_quotes() {
        assert_eq!(
            read_times("0m0.000000s 0m0.000000s\n0m1.500000s 1m0.250000s\n"),
            Some(Duration::from_secs_f64(61.75))
        );
        assert_eq!(
            read_times("0m0.001s 0m0.002s\n0m0.040s 0m0.010s\n"),
            Some(Duration::from_millis(50))
        );
        assert_eq!(read_times(""), None);
        assert_eq!(read_times("0m0s 0m0s\nbusy\n"), None);
        // The wrapped command sees its own quotes and exits with its status;
        // the times go to descriptor 9, which it does not have.
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("times");
        let cmd = with_times(
            "echo 'it''s' \"$0\"; i=0; while [ $i -lt 50000 ]; do i=$((i+1)); done; [ -e /proc/self/fd/9 ] && echo leaked; exit 3",
        );
        let script = format!("exec 9>{}; {cmd}", out.display());
        let o = std::process::Command::new("sh")
            .args(["-c", &script])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(3));
        assert_eq!(String::from_utf8_lossy(&o.stdout), "its sh\n");
        let cpu = read_times(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert!(cpu > Duration::ZERO, "{cpu:?}");
    }

    #[test]
    fn a_busy_child_and_grandchild_are_counted_once_exited() {
        // The grandchild burns CPU and is waited for by the shell.
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                "(i=0; while [ $i -lt 60000 ]; do i=$((i+1)); done) & wait",
            ])
            .spawn()
            .unwrap();
        wait_exited(child.id()).unwrap();
        let cpu = zombie_cpu_time(child.id());
        let status = child.wait().unwrap();
        assert!(status.success());
        let cpu = cpu.expect("a zombie's stat is readable");
        assert!(cpu > Duration::ZERO, "{cpu:?}");
    }
}
