//! The loop with `[run] executor = "slurm"` against a real Slurm cluster:
//! the single-node cluster on loopback that `.ci/slurm-up.sh` starts and
//! `.ci/run` names in `SLURM_CONF`. Keep, discard and crash; parallel
//! candidates; a job over its Slurm time limit, and over the loop's own
//! timeout; `scancel` from outside;
//! Ctrl-C cancelling the job; the controller killed with SIGKILL while a
//! job runs, then resumed (the job adopted: waited for or cancelled,
//! recorded once, never submitted again).
//!
//! The baseline (score 100) is never slow, so a test's first run measures
//! it and then meets the slow candidate.
//!
//! Without a cluster (no `SLURM_CONF`), each test prints why and returns;
//! with `AUTORESEARCH_REQUIRE_SLURM` set (CI), a missing cluster fails.

mod common;

use autoresearch_core::lifecycle::{Attempt, attempts};
use autoresearch_core::{BranchHead, ExecutorJob, JobState};
use autoresearch_test_support::git::git;
use autoresearch_test_support::loop_repo::{LoopRepo, write_scores};
use autoresearch_test_support::process::wait_for;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_autoresearch");

/// Whether a cluster is configured; prints why not when it is not, and
/// fails when CI requires one.
fn cluster(test: &str) -> bool {
    let conf = std::env::var_os("SLURM_CONF").map(PathBuf::from);
    if conf.as_deref().is_some_and(Path::exists) {
        return true;
    }
    assert!(
        std::env::var_os("AUTORESEARCH_REQUIRE_SLURM").is_none(),
        "{test}: AUTORESEARCH_REQUIRE_SLURM is set but SLURM_CONF ({conf:?}) names no slurm.conf"
    );
    eprintln!(
        "{test}: skipped, no Slurm cluster configured (SLURM_CONF unset; `.ci/slurm-up.sh` starts one on loopback)"
    );
    false
}

/// How a test's loop is set up.
struct Setup<'a> {
    propose_on: &'a str,
    /// Seconds the evaluator sleeps on a candidate while `ctl/slow_eval` exists.
    slow: u32,
    eval_timeout: &'a str,
    /// More lines of `[slurm]`.
    slurm: &'a str,
}

impl Default for Setup<'_> {
    fn default() -> Self {
        Setup {
            propose_on: "local",
            slow: 60,
            eval_timeout: "120s",
            slurm: "",
        }
    }
}

struct Repo {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    ctl: PathBuf,
    workdir: PathBuf,
}

impl Repo {
    /// A repository whose proposer writes the next score of `ctl/scores`
    /// (lower is better) and whose evaluator prints it, run on Slurm. A
    /// score of 0 makes the evaluator fail (exit 3); `ctl/slow_eval` makes
    /// it record its job id in `ctl/slow.jobid`, touch `ctl/in_eval` and
    /// sleep. Every evaluation appends its job id to `ctl/eval_jobs`.
    fn new(setup: Setup) -> Repo {
        let workdir = std::cell::RefCell::new(PathBuf::new());
        let LoopRepo { tmp, dir, ctl } = LoopRepo::new(|ctl| {
            let c = ctl.display();
            let w = ctl.with_file_name("slurm");
            *workdir.borrow_mut() = w.clone();
            format!(
                r#"name = "exp"
branch = "main"

[propose]
command = '''
n=$(cat {c}/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}/n
sed -n "${{n}}p" {c}/scores > score.txt
'''
timeout = "60s"

[evaluate]
command = '''
s=$(cat score.txt)
echo "$SLURM_JOB_ID" >> {c}/eval_jobs
if [ "$s" = 0 ]; then echo "evaluator broke" >&2; exit 3; fi
if [ -f {c}/slow_eval ] && [ "$s" != 100 ]; then echo "$SLURM_JOB_ID" > {c}/slow.jobid; touch {c}/in_eval; sleep {slow}; fi
echo "score: $s"
'''
timeout = "{eval_timeout}"
protect = ["autoresearch.toml"]

[compare]
kind = "scalar"
metric = "score"
direction = "min"

[run]
sandbox = "none"
executor = "slurm"

[slurm]
workdir = "{w}"
poll_interval = "200ms"
propose_on = "{propose_on}"
{extra}
"#,
                w = w.display(),
                slow = setup.slow,
                eval_timeout = setup.eval_timeout,
                propose_on = setup.propose_on,
                extra = setup.slurm,
            )
        });
        let workdir = workdir.into_inner();
        Repo {
            _tmp: tmp,
            dir,
            ctl,
            workdir,
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(&self.dir)
            .env_remove("AUTORESEARCH_LEDGER");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "autoresearch {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn spawn(&self, args: &[&str]) -> Running {
        Running(
            self.cmd(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    fn tip(&self) -> String {
        git(&self.dir, &["rev-parse", "refs/heads/main"])
    }

    async fn ledger(&self) -> (Vec<Attempt>, BranchHead, Vec<ExecutorJob>) {
        let w = common::exp_world(&self.dir).await;
        let jobs = w
            .find_all::<ExecutorJob>(|_| true)
            .into_iter()
            .map(|(_, j)| j)
            .collect();
        (attempts(&w, "exp"), w.branch_head("exp").unwrap().1, jobs)
    }

    /// The branch and the ledger agree; every run is finished; every job
    /// recorded once, final; no evaluation submitted twice.
    async fn assert_consistent(&self) -> (Vec<Attempt>, Vec<ExecutorJob>) {
        let (all, head, jobs) = self.ledger().await;
        assert_eq!(head.commit_hash, self.tip(), "branch and BranchHead agree");
        for a in &all {
            assert!(
                a.run.status().unwrap().is_terminal(),
                "{} is {}",
                a.run.run_id,
                a.run.status
            );
        }
        let mut ids: Vec<&str> = jobs.iter().map(|j| j.job_id.as_str()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), jobs.len(), "each job recorded once: {jobs:?}");
        let mut steps: Vec<(&str, &str)> = jobs
            .iter()
            .map(|j| (j.run_id.as_str(), j.step.as_str()))
            .collect();
        steps.sort();
        steps.dedup();
        assert_eq!(steps.len(), jobs.len(), "no step submitted twice: {jobs:?}");
        for j in &jobs {
            assert!(j.is_final(), "job {} left {}", j.job_id, j.state);
            assert!(
                all.iter().any(|a| a.run.run_id == j.run_id),
                "job {} of an unknown run {}",
                j.job_id,
                j.run_id
            );
        }
        let evaluated = std::fs::read_to_string(self.ctl.join("eval_jobs")).unwrap_or_default();
        let mut ran: Vec<&str> = evaluated.lines().collect();
        let n = ran.len();
        ran.sort();
        ran.dedup();
        assert_eq!(ran.len(), n, "no Slurm job ran the evaluator twice");
        for id in ran {
            assert!(
                jobs.iter().any(|j| j.job_id == id),
                "job {id} ran the evaluator but is not in the ledger: {jobs:?}"
            );
        }
        assert_eq!(git(&self.dir, &["status", "--porcelain"]), "");
        // No checkout left, a killed controller's included.
        let slots: Vec<String> = std::fs::read_dir(self.workdir.join("slots"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("slot-"))
                    .collect()
            })
            .unwrap_or_default();
        assert!(slots.is_empty(), "checkouts left: {slots:?}");
        (all, jobs)
    }

    fn slow_job(&self) -> String {
        wait_for(&self.ctl.join("in_eval"));
        std::fs::read_to_string(self.ctl.join("slow.jobid"))
            .unwrap()
            .trim()
            .to_string()
    }

    fn go_fast(&self) {
        for f in ["slow_eval", "in_eval", "slow.jobid"] {
            let _ = std::fs::remove_file(self.ctl.join(f));
        }
    }
}

/// A spawned `autoresearch run`, killed if a failed assertion leaves it.
struct Running(Child);

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// What `scontrol` says of a job's state (`COMPLETED`, `CANCELLED`, ...).
fn slurm_state(job_id: &str) -> String {
    let out = Command::new("scontrol")
        .args(["show", "job", "-o", job_id])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find_map(|f| f.strip_prefix("JobState="))
        .unwrap_or("")
        .to_string()
}

/// Waits (up to `limit`) until the child exits.
fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("autoresearch run did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn outcome_words(all: &[Attempt]) -> Vec<String> {
    all.iter()
        .map(|a| {
            a.outcome
                .as_ref()
                .map(|o| o.status.to_string())
                .unwrap_or_default()
        })
        .collect()
}

#[tokio::test]
async fn keep_discard_crash_and_parallel_candidates_on_slurm() {
    if !cluster("keep_discard_crash_and_parallel_candidates_on_slurm") {
        return;
    }
    let r = Repo::new(Setup {
        propose_on: "slurm",
        ..Setup::default()
    });
    write_scores(&r.ctl, &[50, 70, 0, 40, 30]);
    let out = r.ok(&["run", "--iterations", "3"]);
    let (all, jobs) = r.assert_consistent().await;
    assert_eq!(
        outcome_words(&all),
        ["baseline", "keep", "discard", "crash"],
        "{out}"
    );
    assert_eq!(git(&r.dir, &["show", "main:score.txt"]), "50");
    // Proposers and evaluators alike ran as Slurm jobs, each recorded.
    for a in &all[1..] {
        let steps: Vec<&str> = jobs
            .iter()
            .filter(|j| j.run_id == a.run.run_id)
            .map(|j| j.step.as_str())
            .collect();
        assert!(steps.contains(&"propose"), "{}: {steps:?}", a.run.run_id);
        assert!(steps.contains(&"evaluate-0"), "{}: {steps:?}", a.run.run_id);
    }
    let crashed = &all[3];
    let broke = jobs
        .iter()
        .find(|j| j.run_id == crashed.run.run_id && j.step == "evaluate-0")
        .unwrap();
    assert_eq!(broke.state, JobState::Failed, "{broke:?}");
    assert!(
        broke.reason.contains('3') || broke.reason.contains("NonZeroExitCode"),
        "{broke:?}"
    );
    let crash = crashed.outcome.as_ref().unwrap();
    let detail = crash.descriptor_json.clone();
    assert!(detail.contains("evaluator broke"), "{detail}");
    assert!(
        broke
            .stderr_log
            .starts_with(&r.workdir.display().to_string()),
        "logs under the work directory: {broke:?}"
    );
    // `status` shows every job with its id and state.
    let status: Value = serde_json::from_str(&r.ok(&["status", "--json"])).unwrap();
    let listed = status["jobs"].as_array().unwrap();
    assert_eq!(listed.len(), jobs.len());
    assert!(
        listed
            .iter()
            .all(|j| j["job_id"].as_str().is_some_and(|s| !s.is_empty()))
    );
    let text = r.ok(&["status"]);
    assert!(
        text.contains(&format!("job        slurm {}", broke.job_id)),
        "{text}"
    );

    // Two candidates at once against one head, both better: one is kept,
    // the other measured again on the new head.
    let out = r.ok(&["run", "--iterations", "2", "--parallel", "2"]);
    let (all, _) = r.assert_consistent().await;
    assert_eq!(all.len(), 6, "{out}");
    let head: i64 = git(&r.dir, &["show", "main:score.txt"]).parse().unwrap();
    assert!(head == 30 || head == 40, "{out}");
}

#[tokio::test]
async fn a_job_over_its_slurm_time_limit_is_a_crash() {
    if !cluster("a_job_over_its_slurm_time_limit_is_a_crash") {
        return;
    }
    // Slurm's smallest limit is a minute; its own timeout is above it.
    let r = Repo::new(Setup {
        slow: 150,
        eval_timeout: "300s",
        slurm: "time = \"1\"",
        ..Setup::default()
    });
    write_scores(&r.ctl, &[50]);
    std::fs::write(r.ctl.join("slow_eval"), "").unwrap();
    let out = r.ok(&["run", "--iterations", "1"]);
    let (all, jobs) = r.assert_consistent().await;
    assert_eq!(outcome_words(&all), ["baseline", "crash"], "{out}");
    let job = jobs.iter().find(|j| j.run_id == all[1].run.run_id).unwrap();
    assert_eq!(job.state, JobState::Timeout, "{job:?}");
    let detail = &all[1].outcome.as_ref().unwrap().descriptor_json;
    assert!(detail.contains("Slurm time limit"), "{detail}");
    assert!(detail.contains("timed out"), "{detail}");
}

#[tokio::test]
async fn scancel_from_outside_and_ctrl_c_cancel_jobs() {
    if !cluster("scancel_from_outside_and_ctrl_c_cancel_jobs") {
        return;
    }
    let r = Repo::new(Setup::default());
    write_scores(&r.ctl, &[50, 40, 30]);

    // Someone cancels the evaluation: the run is a crash saying so.
    std::fs::write(r.ctl.join("slow_eval"), "").unwrap();
    let mut child = r.spawn(&["run", "--iterations", "1"]);
    let id = r.slow_job();
    let st = Command::new("scancel").arg(&id).status().unwrap();
    assert!(st.success());
    assert!(wait_exit(&mut child, Duration::from_secs(60)).success());
    let (all, jobs) = r.assert_consistent().await;
    assert_eq!(outcome_words(&all), ["baseline", "crash"]);
    let job = jobs.iter().find(|j| j.job_id == id).unwrap();
    assert_eq!(job.state, JobState::Cancelled, "{job:?}");
    let detail = &all[1].outcome.as_ref().unwrap().descriptor_json;
    assert!(detail.contains("was cancelled (scancel)"), "{detail}");
    let _ = std::fs::remove_file(r.ctl.join("in_eval"));

    // Ctrl-C twice (the second kills what runs): the job is cancelled.
    let mut child = r.spawn(&["run", "--iterations", "1"]);
    let id = r.slow_job();
    let pid = child.id() as i32;
    for _ in 0..2 {
        // SAFETY: kill on a child of this test that has not been reaped.
        unsafe { libc::kill(pid, libc::SIGINT) };
        std::thread::sleep(Duration::from_millis(300));
    }
    wait_exit(&mut child, Duration::from_secs(60));
    let start = Instant::now();
    while slurm_state(&id) != "CANCELLED" {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "job {id} is {} after Ctrl-C",
            slurm_state(&id)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, _, jobs) = r.ledger().await;
    let job = jobs.iter().find(|j| j.job_id == id).unwrap();
    assert_eq!(job.state, JobState::Cancelled, "{job:?}");
    assert!(job.reason.contains("cancelled by the loop"), "{job:?}");
    // The next run finishes what the interrupted one left.
    r.go_fast();
    r.ok(&["run", "--iterations", "1"]);
    r.assert_consistent().await;
}

#[tokio::test]
async fn sigkill_while_a_job_runs_then_resume_adopts_it() {
    if !cluster("sigkill_while_a_job_runs_then_resume_adopts_it") {
        return;
    }
    for on_restart in ["wait", "cancel"] {
        let r = Repo::new(Setup {
            slow: 5,
            slurm: &format!("on_restart = \"{on_restart}\""),
            ..Setup::default()
        });
        write_scores(&r.ctl, &[50, 40]);
        std::fs::write(r.ctl.join("slow_eval"), "").unwrap();
        let mut child = r.spawn(&["run", "--iterations", "1"]);
        let id = r.slow_job();
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(
            slurm_state(&id),
            "RUNNING",
            "the job outlives its controller"
        );
        r.go_fast();
        let out = r.ok(&["run", "--iterations", "1"]);
        let (all, jobs) = r.assert_consistent().await;
        assert_eq!(
            outcome_words(&all),
            ["baseline", "crash", "keep"],
            "{on_restart}: {out}"
        );
        assert_eq!(
            all[1].outcome.as_ref().unwrap().reason,
            "interrupted",
            "{on_restart}"
        );
        let adopted = jobs.iter().find(|j| j.job_id == id).unwrap();
        assert!(
            adopted.reason.contains("adopted after a restart"),
            "{adopted:?}"
        );
        let (state, slurm) = match on_restart {
            "wait" => (JobState::Completed, "COMPLETED"),
            _ => (JobState::Cancelled, "CANCELLED"),
        };
        assert_eq!(adopted.state, state, "{adopted:?}");
        assert_eq!(slurm_state(&id), slurm);
        // The killed run's evaluation was submitted once.
        let of_killed = jobs
            .iter()
            .filter(|j| j.run_id == all[1].run.run_id)
            .count();
        assert_eq!(of_killed, 1, "{jobs:?}");
    }
}

/// Needs no cluster: a bad `[slurm]` is refused before anything runs.
#[test]
fn slurm_config_errors_name_the_key() {
    let base = "name = \"exp\"\nbranch = \"main\"\n[propose]\ncommand = \"true\"\n[evaluate]\ncommand = \"true\"\n[compare]\nspec = \"scalar:score:min\"\n[run]\nexecutor = \"slurm\"\n";
    let cases: &[(&str, &[&str])] = &[
        ("", &["run.executor", "[slurm]"]),
        (
            "[slurm]\nworkdir = \"/w\"\ntime = \"soon\"\n",
            &["[slurm] time", "\"soon\""],
        ),
        (
            "[slurm]\nworkdir = \"/w\"\nqueue = \"gpu\"\n",
            &["[slurm]", "queue"],
        ),
        (
            "[slurm]\nworkdir = \"/w\"\nmem = \"lots\"\n",
            &["[slurm] mem"],
        ),
    ];
    for (tail, needles) in cases {
        let r = Repo::new(Setup::default());
        std::fs::write(r.dir.join("autoresearch.toml"), format!("{base}{tail}")).unwrap();
        let out = r.run(&["run", "--iterations", "1"]);
        assert!(!out.status.success(), "{tail}");
        let err = String::from_utf8_lossy(&out.stderr);
        for n in *needles {
            assert!(err.contains(n), "{err} should mention {n}");
        }
    }
}

/// The id of a pending Slurm job whose batch script is `script`, once
/// there is one (up to 30 s).
fn pending_job_of(script: &Path) -> String {
    let start = Instant::now();
    loop {
        let out = Command::new("squeue")
            .args(["-h", "-t", "PENDING", "-o", "%i %o"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some(id) = text.lines().find_map(|l| {
            let (id, cmd) = l.split_once(' ')?;
            (Path::new(cmd.trim()) == script).then(|| id.to_string())
        }) {
            return id;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no pending job runs {}",
            script.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn sigkill_while_a_job_is_queued_then_resume_waits_for_it() {
    if !cluster("sigkill_while_a_job_is_queued_then_resume_waits_for_it") {
        return;
    }
    // Every job waits 4 s in the queue before it may start.
    let r = Repo::new(Setup {
        slurm: "extra = [\"--begin=now+4\"]",
        ..Setup::default()
    });
    write_scores(&r.ctl, &[50, 40]);
    let mut child = r.spawn(&["run", "--iterations", "1"]);
    // The candidate's evaluation: its script without an exit file once
    // the baseline's (step `baseline-0`) has one.
    let runs = r.workdir.join("runs");
    let start = Instant::now();
    let script = loop {
        let step = |name: &str| -> Vec<PathBuf> {
            std::fs::read_dir(&runs)
                .map(|d| {
                    d.flatten()
                        .map(|e| e.path().join(name))
                        .filter(|p| p.exists())
                        .collect()
                })
                .unwrap_or_default()
        };
        let baseline_ended = step("baseline-0.sh")
            .iter()
            .any(|s| s.with_extension("exit").exists());
        let waiting: Vec<PathBuf> = step("evaluate-0.sh")
            .into_iter()
            .filter(|s| !s.with_extension("exit").exists())
            .collect();
        if let (true, [candidate]) = (baseline_ended, waiting.as_slice()) {
            break candidate.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "no candidate evaluation submitted"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let id = pending_job_of(&script);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        slurm_state(&id),
        "PENDING",
        "the queued job outlives its controller"
    );
    let (_, _, jobs) = r.ledger().await;
    let queued = jobs.iter().find(|j| j.job_id == id).unwrap();
    assert_eq!(
        queued.state,
        JobState::Pending,
        "recorded when submitted: {queued:?}"
    );
    let out = r.ok(&["run", "--iterations", "1"]);
    let (all, jobs) = r.assert_consistent().await;
    assert_eq!(outcome_words(&all), ["baseline", "crash", "keep"], "{out}");
    let adopted = jobs.iter().find(|j| j.job_id == id).unwrap();
    assert_eq!(adopted.state, JobState::Completed, "{adopted:?}");
    assert!(adopted.reason.contains("exit code 0"), "{adopted:?}");
    assert_eq!(slurm_state(&id), "COMPLETED");
}

#[tokio::test]
async fn a_job_over_the_loops_own_timeout_is_cancelled_and_a_crash() {
    if !cluster("a_job_over_the_loops_own_timeout_is_cancelled_and_a_crash") {
        return;
    }
    let r = Repo::new(Setup {
        eval_timeout: "3s",
        ..Setup::default()
    });
    write_scores(&r.ctl, &[50]);
    std::fs::write(r.ctl.join("slow_eval"), "").unwrap();
    let out = r.ok(&["run", "--iterations", "1"]);
    let (all, jobs) = r.assert_consistent().await;
    assert_eq!(outcome_words(&all), ["baseline", "crash"], "{out}");
    let id = std::fs::read_to_string(r.ctl.join("slow.jobid")).unwrap();
    let job = jobs.iter().find(|j| j.job_id == id.trim()).unwrap();
    assert_eq!(job.state, JobState::Cancelled, "{job:?}");
    assert_eq!(slurm_state(&job.job_id), "CANCELLED");
    let detail = &all[1].outcome.as_ref().unwrap().descriptor_json;
    assert!(
        detail.contains("ran past the job's timeout (3s)"),
        "{detail}"
    );
    assert!(detail.contains("timed out"), "{detail}");
}
