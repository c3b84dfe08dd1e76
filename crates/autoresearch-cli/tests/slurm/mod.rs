//! The Slurm tests' fixture (each Slurm test file takes it with `mod
//! slurm;`): a repository whose loop runs on the loopback cluster, and
//! what the tests ask Slurm and the ledger.
//!
//! Without a cluster (no `SLURM_CONF`), each test prints why and returns;
//! with `AUTORESEARCH_REQUIRE_SLURM` set (CI), a missing cluster fails.

#![allow(dead_code, reason = "each test file uses its own part of the fixture")]

use crate::common;
use autoresearch_core::lifecycle::{Attempt, attempts};
use autoresearch_core::{BranchHead, ExecutorJob};
use autoresearch_test_support::git::git;
use autoresearch_test_support::loop_repo::LoopRepo;
use autoresearch_test_support::process::wait_for;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_autoresearch");

/// Whether a cluster is configured; prints why not when it is not, and
/// fails when CI requires one.
pub fn cluster(test: &str) -> bool {
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
pub struct Setup<'a> {
    pub propose_on: &'a str,
    /// Seconds the evaluator sleeps on a candidate while `ctl/slow_eval` exists.
    pub slow: u32,
    pub eval_timeout: &'a str,
    /// More lines of `[slurm]`.
    pub slurm: &'a str,
    /// The `[compare]` table's lines.
    pub compare: &'a str,
    /// Lines the evaluator runs first (`{c}` is the control directory).
    pub evaluate_first: &'a str,
    /// Lines the evaluator runs once it has read the score into `$s`.
    pub evaluate_then: &'a str,
    /// Lines the proposer runs first (`{c}` is the control directory).
    pub propose_first: &'a str,
}

impl Default for Setup<'_> {
    fn default() -> Self {
        Setup {
            propose_on: "local",
            slow: 60,
            eval_timeout: "120s",
            slurm: "",
            compare: "kind = \"scalar\"\nmetric = \"score\"\ndirection = \"min\"",
            evaluate_first: "",
            evaluate_then: "",
            propose_first: "",
        }
    }
}

pub struct Repo {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub ctl: PathBuf,
    pub workdir: PathBuf,
}

impl Repo {
    /// A repository whose proposer writes the next score of `ctl/scores`
    /// (lower is better) and whose evaluator prints it, run on Slurm. A
    /// score of 0 makes the evaluator fail (exit 3); `ctl/slow_eval` makes
    /// it record its job id in `ctl/slow.jobid`, touch `ctl/in_eval` and
    /// sleep. Every evaluation appends its job id to `ctl/eval_jobs`.
    pub fn new(setup: Setup) -> Repo {
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
{propose_first}
n=$(cat {c}/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}/n
sed -n "${{n}}p" {c}/scores > score.txt
'''
timeout = "60s"

[evaluate]
command = '''
{first}
s=$(cat score.txt)
{then}
echo "$SLURM_JOB_ID" >> {c}/eval_jobs
if [ "$s" = 0 ]; then echo "evaluator broke" >&2; exit 3; fi
if [ -f {c}/slow_eval ] && [ "$s" != 100 ]; then echo "$SLURM_JOB_ID" > {c}/slow.jobid; touch {c}/in_eval; sleep {slow}; fi
echo "score: $s"
'''
timeout = "{eval_timeout}"
protect = ["autoresearch.toml"]

[compare]
{compare}

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
                compare = setup.compare,
                first = setup.evaluate_first.replace("{c}", &c.to_string()),
                then = setup.evaluate_then,
                propose_first = setup.propose_first.replace("{c}", &c.to_string()),
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

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(&self.dir)
            .env_remove("AUTORESEARCH_LEDGER");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "autoresearch {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn spawn(&self, args: &[&str]) -> Running {
        Running(
            self.cmd(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    pub fn tip(&self) -> String {
        git(&self.dir, &["rev-parse", "refs/heads/main"])
    }

    pub async fn ledger(&self) -> (Vec<Attempt>, BranchHead, Vec<ExecutorJob>) {
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
    pub async fn assert_consistent(&self) -> (Vec<Attempt>, Vec<ExecutorJob>) {
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

    pub fn slow_job(&self) -> String {
        wait_for(&self.ctl.join("in_eval"));
        std::fs::read_to_string(self.ctl.join("slow.jobid"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// Waits (up to 30 s) until Slurm job `id` is in the ledger.
    pub fn wait_recorded(&self, id: &str) {
        self.wait_jobs(&format!("job {id} recorded"), |jobs| {
            jobs.iter().any(|j| j["job_id"] == id)
        });
    }

    /// Waits (up to 30 s) until the jobs in the ledger, as `status --json`
    /// lists them beside the running loop, are what `done` wants.
    pub fn wait_jobs(&self, what: &str, done: impl Fn(&[serde_json::Value]) -> bool) {
        let start = Instant::now();
        loop {
            let status: serde_json::Value =
                serde_json::from_str(&self.ok(&["status", "--json"])).unwrap_or_default();
            let jobs = status["jobs"].as_array().cloned().unwrap_or_default();
            if done(&jobs) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{what}: not within 30 s: {status}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn go_fast(&self) {
        for f in ["slow_eval", "in_eval", "slow.jobid"] {
            let _ = std::fs::remove_file(self.ctl.join(f));
        }
    }
}

/// A spawned `autoresearch run`, killed if a failed assertion leaves it.
pub struct Running(Child);

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
pub fn slurm_state(job_id: &str) -> String {
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
pub fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
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

pub fn outcome_words(all: &[Attempt]) -> Vec<String> {
    all.iter()
        .map(|a| {
            a.outcome
                .as_ref()
                .map(|o| o.status.to_string())
                .unwrap_or_default()
        })
        .collect()
}

/// The id of a pending Slurm job whose batch script is `script`, once
/// there is one (up to 30 s).
pub fn pending_job_of(script: &Path) -> String {
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
