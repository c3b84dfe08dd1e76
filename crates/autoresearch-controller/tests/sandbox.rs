//! Hostile jobs in the bubblewrap sandbox (`.ci/run` installs bubblewrap):
//! writes outside the checkout, reads of a hidden slot, a `setsid` daemon,
//! a burst of processes over the process limit, a memory hog, the network
//! when it is off, and a controller killed mid-job. Each asserts that
//! nothing escaped and that no process of the job is left.

use autoresearch_controller::sandbox::{
    ChildSetup, JobCgroup, JobSpec, ResourceLimits, Sandbox, SandboxConfig, SandboxMode,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct Dirs {
    _tmp: tempfile::TempDir,
    /// The user's repository.
    repo: PathBuf,
    /// The controller's state directory (hidden from jobs).
    state: PathBuf,
    /// This job's checkout, inside the state directory.
    slot: PathBuf,
    /// Another job's checkout.
    other: PathBuf,
}

fn dirs() -> Dirs {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let state = repo.join(".autoresearch");
    let slot = state.join("slots/a");
    let other = state.join("slots/b");
    for d in [&repo, &slot, &other] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(repo.join("eval.sh"), "echo score: 1\n").unwrap();
    std::fs::write(other.join("secret.txt"), "the other slot's idea\n").unwrap();
    Dirs {
        _tmp: tmp,
        repo,
        state,
        slot,
        other,
    }
}

fn bwrap(limits: ResourceLimits) -> Sandbox {
    Sandbox::new(SandboxConfig {
        mode: SandboxMode::Bwrap,
        limits,
        ..SandboxConfig::default()
    })
    .expect("bubblewrap runs here (.ci/run installs it)")
}

struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `command` as a job in `d.slot` and waits for it (at most 30 s).
fn job(
    sandbox: &Sandbox,
    d: &Dirs,
    command: &str,
    network: bool,
    cgroup: Option<&JobCgroup>,
) -> Ran {
    let env = BTreeMap::from([("AUTORESEARCH_RUN_ID".to_string(), "r1".to_string())]);
    let hidden = [d.state.clone()];
    let spec = JobSpec {
        repository: &d.repo,
        checkout: &d.slot,
        workdir: &d.slot,
        command,
        env: &env,
        network,
        hidden: &hidden,
        visible: &[],
    };
    let mut cmd = sandbox.command(&spec);
    let setup = ChildSetup::new(sandbox.limits(), cgroup);
    // SAFETY: `apply` makes only async-signal-safe calls (see its doc).
    unsafe {
        cmd.pre_exec(move || setup.apply());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
            .await
            .expect("the job ends")
            .unwrap();
        Ran {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
}

/// Processes of the whole machine whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let zombie = std::fs::read_to_string(e.path().join("stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(true);
        if cmdline.contains(marker) && !zombie && !cmdline.contains("sh -c") {
            out.push(pid);
        }
    }
    out
}

fn none_left(marker: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if processes_with(marker).is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn writes_outside_the_checkout_fail_and_change_nothing() {
    let d = dirs();
    let sb = bwrap(ResourceLimits::default());
    let before = std::fs::read_to_string(d.repo.join("eval.sh")).unwrap();
    let script = format!(
        "touch {slot}/inside && echo ok-inside; \
         touch {repo}/../x_escape 2>/dev/null && echo escaped-parent; \
         echo 'echo score: 1000' >> {repo}/eval.sh 2>/dev/null && echo escaped-eval; \
         touch $HOME/x_escape_home 2>/dev/null && echo escaped-home; \
         touch /tmp/private && echo ok-tmp",
        slot = d.slot.display(),
        repo = d.repo.display()
    );
    let ran = job(&sb, &d, &script, false, None);
    assert!(ran.stdout.contains("ok-inside"), "{}", ran.stderr);
    assert!(
        ran.stdout.contains("ok-tmp"),
        "a private /tmp: {}",
        ran.stderr
    );
    // `../x_escape` lands in the job's private /tmp (the test's temp dir is
    // under /tmp), never on the real filesystem; the others fail outright.
    assert!(!ran.stdout.contains("escaped-eval"), "{}", ran.stdout);
    assert!(!ran.stdout.contains("escaped-home"), "{}", ran.stdout);
    assert_eq!(
        std::fs::read_to_string(d.repo.join("eval.sh")).unwrap(),
        before
    );
    assert!(!d.repo.parent().unwrap().join("x_escape").exists());
    assert!(d.slot.join("inside").exists());
    assert!(
        !Path::new("/tmp/private").exists(),
        "the job's /tmp is its own"
    );
}

#[test]
fn another_slot_and_the_ledger_are_hidden() {
    let d = dirs();
    std::fs::write(d.state.join("ledger.redb"), "ledger bytes").unwrap();
    let sb = bwrap(ResourceLimits::default());
    let script = format!(
        "cat {other}/secret.txt 2>&1; ls {state} 2>&1; cat {state}/ledger.redb 2>&1; echo done",
        other = d.other.display(),
        state = d.state.display()
    );
    let ran = job(&sb, &d, &script, false, None);
    assert!(ran.stdout.contains("done"), "{}", ran.stderr);
    assert!(
        !ran.stdout.contains("the other slot's idea"),
        "{}",
        ran.stdout
    );
    assert!(!ran.stdout.contains("ledger bytes"), "{}", ran.stdout);
}

#[test]
fn a_setsid_daemon_dies_with_its_job() {
    let d = dirs();
    let sb = bwrap(ResourceLimits::default());
    let ran = job(
        &sb,
        &d,
        "setsid sleep 7771.25 & (sleep 7772.25 &) ; echo started",
        false,
        None,
    );
    assert!(ran.stdout.contains("started"), "{}", ran.stderr);
    assert!(
        none_left("7771.25") && none_left("7772.25"),
        "daemons survived the job"
    );
}

#[test]
fn the_environment_is_an_allow_list() {
    let d = dirs();
    let sb = bwrap(ResourceLimits::default());
    let base = [
        ("AR_TEST_SECRET_TOKEN", "hunter2"),
        ("AUTORESEARCH_TEST_VISIBLE", "yes"),
        ("ANTHROPIC_API_KEY", "k"),
        ("PATH", "/usr/bin"),
        ("LC_ALL", "C"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    let job_env = BTreeMap::from([("AUTORESEARCH_RUN_ID".to_string(), "r1".to_string())]);
    let env = sb.environment_from(base, &job_env);
    let names: Vec<&str> = env.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "ANTHROPIC_API_KEY",
            "AUTORESEARCH_RUN_ID",
            "AUTORESEARCH_TEST_VISIBLE",
            "LC_ALL",
            "PATH"
        ]
    );
    // A job sees the same: cargo sets CARGO_MANIFEST_DIR for this test
    // process, and it is not on the list.
    assert!(std::env::var("CARGO_MANIFEST_DIR").is_ok());
    let ran = job(&sb, &d, "env", false, None);
    assert!(!ran.stdout.contains("CARGO_MANIFEST_DIR"), "{}", ran.stdout);
    assert!(
        ran.stdout.contains("AUTORESEARCH_RUN_ID=r1"),
        "{}",
        ran.stdout
    );
    assert!(ran.stdout.contains("PATH="), "{}", ran.stdout);
}

#[test]
fn the_network_is_off_when_the_job_kind_says_so() {
    let d = dirs();
    let sb = bwrap(ResourceLimits::default());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let probe = format!(
        "python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2); print('connected')\" 2>&1"
    );
    let off = job(&sb, &d, &probe, false, None);
    assert!(!off.stdout.contains("connected"), "{}", off.stdout);
    let on = job(&sb, &d, &probe, true, None);
    assert!(
        on.stdout.contains("connected"),
        "{}{}",
        on.stdout,
        on.stderr
    );
}

#[test]
fn a_memory_hog_fails_under_its_limit() {
    let d = dirs();
    let sb = bwrap(ResourceLimits {
        memory_bytes: Some(512 << 20),
        ..ResourceLimits::default()
    });
    let ran = job(
        &sb,
        &d,
        "python3 -c 'x = bytearray(1 << 30); print(\"allocated\")'",
        false,
        None,
    );
    assert!(!ran.stdout.contains("allocated"), "{}", ran.stdout);
    assert_ne!(ran.code, Some(0), "{}", ran.stderr);
    let small = job(
        &sb,
        &d,
        "python3 -c 'x = bytearray(1 << 20); print(\"ok\")'",
        false,
        None,
    );
    assert!(small.stdout.contains("ok"), "{}", small.stderr);
}

#[test]
fn a_burst_of_processes_stops_at_the_process_limit() {
    let d = dirs();
    let limits = ResourceLimits {
        processes: Some(40),
        ..ResourceLimits::default()
    };
    let sb = bwrap(limits);
    let cgroup = JobCgroup::create("burst-test", 40).expect("a pids cgroup can be made here");
    let ran = job(
        &sb,
        &d,
        "n=0; for i in $(seq 200); do sleep 7773.5 & n=$((n+1)); done 2>/dev/null; echo spawned; exit 0",
        false,
        Some(&cgroup),
    );
    assert!(
        cgroup.hit_process_limit(),
        "the limit refused forks: {}",
        ran.stderr
    );
    drop(cgroup);
    assert!(none_left("7773.5"), "no process of the burst is left");
}

#[test]
fn a_killed_controller_takes_its_jobs_with_it() {
    let d = dirs();
    let sb = bwrap(ResourceLimits::default());
    let env = BTreeMap::new();
    let hidden = [d.state.clone()];
    let spec = JobSpec {
        repository: &d.repo,
        checkout: &d.slot,
        workdir: &d.slot,
        command: "setsid sleep 7774.5 & sleep 7775.5",
        env: &env,
        network: false,
        hidden: &hidden,
        visible: &[],
    };
    let cmd = sb.command(&spec);
    let std_cmd = cmd.as_std();
    // A stand-in controller: a shell that starts the sandboxed job and waits.
    let mut line = vec![std_cmd.get_program().to_string_lossy().into_owned()];
    line.extend(
        std_cmd
            .get_args()
            .map(|a| format!("'{}'", a.to_string_lossy())),
    );
    let mut controller = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{} & wait", line.join(" ")))
        .current_dir(&d.slot)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_with("7775.5").is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!processes_with("7775.5").is_empty(), "the job started");
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(controller.id() as i32, libc::SIGKILL);
    }
    let _ = controller.wait();
    assert!(
        none_left("7774.5") && none_left("7775.5"),
        "jobs outlived the controller"
    );
}
