//! The read commands as a person meets them, on a real loop (real git
//! repository, real scripts, the real redb ledger): what `status` and
//! `show` print (golden, with times, hashes and run ids normalised),
//! choosing what to read (`--experiment`, `--world`, the config's default),
//! `log` as an experiment table, `best`, `diff`, `checkout`, `replay
//! --dry-run`, `status --watch`, and errors that print each cause once.

use autoresearch_test_support::git::git;
use autoresearch_test_support::loop_repo::LoopRepo;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_autoresearch");

/// Each candidate lowers the score by one and sets `LR` in `params.py`;
/// lower is better, so every candidate is kept.
fn config(ctl: &Path) -> String {
    let c = ctl.display();
    format!(
        r#"name = "exp"
branch = "main"

[propose]
command = '''
if [ -f {c}/hold ]; then touch {c}/in_propose; while [ -f {c}/hold ]; do sleep 0.05; done; fi
n=$(cat {c}/n 2>/dev/null || echo 100); n=$((n-1)); echo $n > {c}/n
echo $n > score.txt
printf 'LR = 0.%s\nDEPTH = 8\n' $n > params.py
git add -A && git commit -qm "try score $n"
'''
timeout = "60s"

[evaluate]
command = 'echo "score: $(cat score.txt)"'
timeout = "60s"
protect = ["autoresearch.toml"]

[compare]
kind = "scalar"
metric = "score"
direction = "min"

[run]
sandbox = "none"
"#
    )
}

struct Repo {
    fx: LoopRepo,
}

impl Repo {
    /// The fixture after `run --iterations 3`: a baseline and three keeps.
    fn ran() -> Repo {
        let fx = LoopRepo::new(config);
        std::fs::write(fx.dir.join("params.py"), "LR = 0.1\nDEPTH = 8\n").unwrap();
        git(&fx.dir, &["add", "-A"]);
        git(&fx.dir, &["commit", "-qm", "params"]);
        let r = Repo { fx };
        r.ok(&["run", "--iterations", "3"]);
        r
    }

    fn dir(&self) -> &Path {
        &self.fx.dir
    }

    fn run_in(&self, dir: &Path, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .current_dir(dir)
            .env_remove("AUTORESEARCH_LEDGER")
            .env("TZ", "UTC")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
            .output()
            .unwrap()
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_in(self.dir(), args)
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

    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "autoresearch {args:?} succeeded:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }

    /// Run ids and commits of the attempts, in order.
    fn attempts(&self) -> Vec<(String, String)> {
        self.json(&["log", "--json"])["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["run__run_id"].as_str().unwrap().to_string(),
                    r["run__commit_hash"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// `text` with run ids, commits, the temp directory, local times and
    /// durations replaced by stable names.
    fn normalise(&self, text: &str) -> String {
        let mut out = text.replace(&self.fx.tmp.path().display().to_string(), "<tmp>");
        for (i, (run, commit)) in self.attempts().iter().enumerate() {
            out = out.replace(commit.as_str(), &format!("<commit{i}>"));
            out = out.replace(&commit[..7], &format!("<c{i}>"));
            out = out.replace(run.as_str(), &format!("<run{i}>"));
        }
        // The head tick counts lease heartbeats too, which follow the clock.
        let tick = self.json(&["status", "--json"])["tick"].as_u64().unwrap();
        out = out.replace(&format!("tick {tick})"), "tick <tick>)");
        normalise_times(&out)
    }
}

/// Replaces `YYYY-MM-DD HH:MM:SS` with `<time>` and duration words
/// (`12ms`, `1.5s`, `4m`, `05s`, `2h`) with `<d>`.
fn normalise_times(text: &str) -> String {
    let mut s = String::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    let shape = "dddd-dd-dd dd:dd:dd";
    while i < chars.len() {
        let fits = chars.len() - i >= shape.len()
            && shape.chars().zip(&chars[i..]).all(|(p, c)| match p {
                'd' => c.is_ascii_digit(),
                other => other == *c,
            });
        if fits {
            s.push_str("<time>");
            i += shape.len();
        } else {
            s.push(chars[i]);
            i += 1;
        }
    }
    s.split_inclusive([' ', '(', ')', ',', '\n'])
        .map(|w| {
            let core = w.trim_end_matches([' ', '(', ')', ',', '\n']);
            let tail = &w[core.len()..];
            let digits = core.trim_end_matches(['m', 's', 'h', 'd']);
            let unit = &core[digits.len()..];
            let is_duration = !digits.is_empty()
                && ["ms", "s", "m", "h", "d"].contains(&unit)
                && digits.chars().all(|c| c.is_ascii_digit() || c == '.');
            if is_duration {
                format!("<d>{tail}")
            } else {
                w.to_string()
            }
        })
        .collect()
}

#[test]
fn status_and_show_print_plain_text() {
    let r = Repo::ran();
    let status = r.normalise(&r.ok(&["status"]));
    assert_eq!(
        status,
        "experiment exp (world autoresearch:exp, tick <tick>)
head       <c3> (run <run3>): score 97
why        score improved 98 -> 97 (delta -1) [scalar:score:min]
since      <time> (<d> ago)
branch     main at the head
attempts   4 (3 kept, 0 discarded, 0 crashed, 0 pending, 1 baselines)
cost       CPU <d> (propose <d>, evaluate <d>), wall <d>, 7 jobs
"
    );
    let runs = r.attempts();
    let show = r.normalise(&r.ok(&["show", &runs[2].0]));
    let expected = "run        <run2>
decision   keep: score improved 99 -> 98 (delta -1)
idea       try score 98
commit     <commit2>
base       <commit1>
agent      exp-shell (shell, on <host>)
task       <task>
time       <time>, took <d>
metrics    score 98
sample 0   score 98 · exit 0 · <d> · <time>
cost       CPU <d> (propose <d>, evaluate <d>), wall <d>, 2 jobs
comparator scalar:score:min
decided    <time>
evidence   candidate 98, delta -1, direction minimize, improvement 1, incumbent 99, metric score, min_delta 0
diff       params.py | 2 +-
           score.txt | 2 +-
           2 files changed, 2 insertions(+), 2 deletions(-)
candidate  refs/autoresearch/exp/<run2>
log        <tmp>/repo/.autoresearch/runs/<run2>/evaluate-0.stderr.log
";
    // The host name and the proposer's command line vary: compare the
    // lines that do not carry them, and the order of every label.
    let labels = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !l.starts_with(' '))
            .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
            .collect()
    };
    for line in expected.lines() {
        if line.contains("<host>") || line.contains("<task>") || line.starts_with("log") {
            continue;
        }
        assert!(show.contains(line), "missing {line:?} in:\n{show}");
    }
    let got = labels(&show);
    let want: Vec<String> = labels(expected)
        .into_iter()
        .filter(|l| l != "log")
        .collect();
    assert_eq!(
        got.iter()
            .filter(|l| *l != "log")
            .cloned()
            .collect::<Vec<_>>(),
        want,
        "{show}"
    );
    // No raw JSON, no Unix milliseconds anywhere.
    for text in [&status, &show] {
        assert!(!text.contains('{') && !text.contains(" ms"), "{text}");
    }
    // --json keeps full detail.
    let json = r.json(&["show", &runs[2].0, "--json"]);
    assert_eq!(json["outcome"]["descriptor"]["delta"], -1.0);
    assert_eq!(json["means"]["score"]["mean"], 98.0);
    assert!(json["run"]["started_at_ms"].as_i64().unwrap() > 0);
}

#[test]
fn show_diff_and_diff_between_runs() {
    let r = Repo::ran();
    let runs = r.attempts();
    let text = r.ok(&["show", &runs[2].0, "--diff"]);
    assert!(
        text.contains("-LR = 0.99") && text.contains("+LR = 0.98"),
        "{text}"
    );
    let d = r.ok(&["diff", &runs[1].0, &runs[3].0]);
    assert!(d.contains("-99") && d.contains("+97"), "{d}");
    let stat = r.ok(&["diff", &runs[1].0, &runs[3].0, "--stat"]);
    assert!(stat.contains("2 files changed"), "{stat}");
    let err = r.fails(&["diff", "nope", &runs[3].0]);
    assert!(err.contains("no run \"nope\""), "{err}");
}

#[test]
fn log_is_an_experiment_table() {
    let r = Repo::ran();
    let table = r.ok(&["log"]);
    let header = table.lines().next().unwrap();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        [
            "RUN_ID", "COMMIT", "LR", "score", "STATUS", "IDEA", "REASON"
        ],
        "{table}"
    );
    assert!(table.contains("try score 97"), "{table}");
    // Parameters from the diff: only what changed (DEPTH never did).
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(rows.len(), 4, "{table}");
    assert!(
        rows[1].contains("0.99") && rows[3].contains("0.97"),
        "{table}"
    );
    // --params reads the whole file at each commit.
    let with_file = r.ok(&[
        "log",
        "--params",
        "params.py",
        "--columns",
        "DEPTH,LR,score",
    ]);
    let header = with_file.lines().next().unwrap();
    assert_eq!(
        header.split_whitespace().take(5).collect::<Vec<_>>(),
        ["RUN_ID", "COMMIT", "DEPTH", "LR", "score"]
    );
    assert!(
        with_file.lines().nth(1).unwrap().contains(" 8 "),
        "{with_file}"
    );
    // Sort, filter, limit.
    let cases: &[(&[&str], &[&str])] = &[
        (&["--sort", "score"], &["97", "98", "99", "100"]),
        (&["--sort", "score:desc", "--limit", "2"], &["100", "99"]),
        (
            &["--status", "keep", "--sort", "score:desc"],
            &["99", "98", "97"],
        ),
        (&["--status", "baseline"], &["100"]),
        (&["--limit", "1"], &["97"]),
    ];
    for (extra, scores) in cases {
        let mut args = vec!["log", "--json"];
        args.extend_from_slice(extra);
        let got: Vec<String> = r.json(&args)["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row["values"]["score"].to_string().replace(".0", ""))
            .collect();
        assert_eq!(got, *scores, "{extra:?}");
    }
    for (args, message) in [
        (
            &["log", "--sort", "nope"][..],
            "--sort \"nope\": no such column",
        ),
        (&["log", "--columns", "LR,nope"], "--columns \"nope\""),
        (&["log", "--status", "kept"], "expected one of keep"),
    ] {
        let err = r.fails(args);
        assert!(err.contains(message), "{args:?}: {err}");
    }
}

#[test]
fn best_says_what_was_gained() {
    let r = Repo::ran();
    let text = r.ok(&["best"]);
    assert!(text.contains("idea       try score 97"), "{text}");
    assert!(
        text.contains("gain       score 100 -> 97 (-3, -3%) since the baseline"),
        "{text}"
    );
    assert!(text.contains("kept       3 of 4 attempts"), "{text}");
    let json = r.json(&["best", "--json"]);
    assert_eq!(json["metrics"]["score"], 97.0);
    assert_eq!(json["baseline"]["metrics"]["score"], 100.0);
}

#[test]
fn checkout_never_goes_over_local_edits() {
    let r = Repo::ran();
    let runs = r.attempts();
    let id = &runs[2].0;
    // A local edit: refused, nothing changed.
    std::fs::write(r.dir().join("score.txt"), "edited\n").unwrap();
    let err = r.fails(&["checkout", id]);
    assert!(err.contains("local changes"), "{err}");
    assert_eq!(
        std::fs::read_to_string(r.dir().join("score.txt")).unwrap(),
        "edited\n"
    );
    // A worktree elsewhere is fine.
    let wt = r.fx.tmp.path().join("wt");
    let out = r.ok(&[
        "checkout",
        id,
        "--worktree",
        wt.to_str().unwrap(),
        "--branch",
        "try",
    ]);
    assert!(out.contains("new branch try"), "{out}");
    assert_eq!(
        std::fs::read_to_string(wt.join("score.txt")).unwrap(),
        "98\n"
    );
    assert_eq!(git(r.dir(), &["rev-parse", "try"]), runs[2].1);
    // An existing branch is never moved.
    let err = r.fails(&[
        "checkout",
        &runs[3].0,
        "--worktree",
        "elsewhere",
        "--branch",
        "try",
    ]);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(git(r.dir(), &["rev-parse", "try"]), runs[2].1);
    // Clean again: switched to a new branch at the run's commit.
    git(r.dir(), &["checkout", "--", "score.txt"]);
    let out = r.ok(&["checkout", id]);
    assert!(out.contains(&format!("autoresearch/run-{id}")), "{out}");
    assert_eq!(git(r.dir(), &["rev-parse", "HEAD"]), runs[2].1);
}

#[test]
fn every_read_command_takes_experiment_and_world_and_forks_say_so() {
    let r = Repo::ran();
    let runs = r.attempts();
    let tick = r.json(&["status", "--json"])["tick"].as_u64().unwrap();
    r.ok(&[
        "fork",
        "--at",
        &tick.to_string(),
        "--promote",
        &runs[1].0,
        "--name",
        "what-if",
    ]);
    let status = r.ok(&["status", "--world", "what-if"]);
    assert!(
        status.contains("fork       of autoresearch:exp at tick")
            && status.contains("autoresearch/what-if does not exist yet")
            && !status.contains("moved outside the loop"),
        "{status}"
    );
    // Outside the repository, with --ledger: every read command accepts
    // --experiment and --world.
    let ledger = r.dir().join(".autoresearch/ledger.redb");
    let elsewhere = r.fx.tmp.path();
    let id = runs[1].0.as_str();
    let commands: &[&[&str]] = &[
        &["status"],
        &["show", id],
        &["log"],
        &["best"],
        &["runs"],
        &["history", id],
        &["plot", "--out", "x.svg"],
    ];
    for cmd in commands {
        for choose in [
            &["--experiment", "exp"][..],
            &["--world", "what-if"],
            &["--world", "exp"],
        ] {
            let mut args = vec!["--ledger", ledger.to_str().unwrap()];
            args.extend_from_slice(cmd);
            args.extend_from_slice(choose);
            let out = r.run_in(elsewhere, &args);
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    // Inside the repository the config's experiment is the default.
    for cmd in [&["runs"][..], &["history", id], &["log"], &["best"]] {
        r.ok(cmd);
    }
    // `worlds` where there is no ledger: an error, and nothing created.
    let empty = tempfile::tempdir().unwrap();
    let out = r.run_in(empty.path(), &["worlds"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not exist"),
        "{out:?}"
    );
    assert!(
        !empty.path().join(".autoresearch").exists(),
        "worlds created a ledger"
    );
    // Without a config, the ledger's only experiment is the default.
    let out = r.run_in(elsewhere, &["--ledger", ledger.to_str().unwrap(), "status"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("experiment exp "),
        "{out:?}"
    );
}

#[test]
fn status_of_an_imported_experiment_needs_no_config() {
    let tmp = tempfile::tempdir().unwrap();
    let tsv = tmp.path().join("results.tsv");
    std::fs::write(
        &tsv,
        "commit\tval_bpb\tstatus\tdescription\na1b2c3d\t0.9979\tkeep\tbaseline\nb2c3d4e\t0.9932\tkeep\tincrease LR\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .current_dir(tmp.path())
            .env_remove("AUTORESEARCH_LEDGER")
            .env("TZ", "UTC")
            .output()
            .unwrap()
    };
    assert!(
        run(&["ingest", "tsv", "results.tsv", "--experiment", "nano"])
            .status
            .success()
    );
    let out = run(&["status", "--experiment", "nano"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("experiment nano") && text.contains("attempts   2"),
        "{text}"
    );
    let out = run(&["status"]);
    assert!(out.status.success(), "{out:?}");
    let log = String::from_utf8_lossy(&run(&["log"]).stdout).into_owned();
    assert!(log.contains("increase LR"), "{log}");
}

#[test]
fn a_cause_is_printed_once() {
    let tmp = tempfile::tempdir().unwrap();
    // A config path that is a directory: reading it fails with an OS error.
    let dir = tmp.path().join("autoresearch.toml");
    std::fs::create_dir(&dir).unwrap();
    std::fs::create_dir(tmp.path().join(".autoresearch")).unwrap();
    let out = Command::new(BIN)
        .args(["status"])
        .current_dir(tmp.path())
        .env_remove("AUTORESEARCH_LEDGER")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.matches("(os error 21)").count(), 1, "{err}");
    assert!(err.contains("reading config"), "{err}");
}

#[test]
fn status_watch_redraws_until_interrupted() {
    let r = Repo::ran();
    let mut child = Command::new(BIN)
        .args(["status", "--watch", "1"])
        .current_dir(r.dir())
        .env_remove("AUTORESEARCH_LEDGER")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut all);
        all
    });
    std::thread::sleep(Duration::from_millis(2500));
    let ok = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("--watch did not stop after SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let text = reader.join().unwrap();
    assert!(
        text.matches("experiment exp").count() >= 2,
        "at least two frames: {text}"
    );
    assert!(!text.contains('\x1b'), "no escape codes off a terminal");
}

#[test]
fn show_prints_a_crash_cause_as_text() {
    let fx = LoopRepo::new(|_| {
        r#"name = "exp"
branch = "main"

[propose]
command = 'echo 2 > score.txt'
timeout = "60s"

[evaluate]
command = '''
if [ "$(cat score.txt)" = 2 ]; then echo "sh: 1: claude: not found" >&2; exit 127; fi
echo "score: $(cat score.txt)"
'''
timeout = "60s"

[compare]
spec = "scalar:score:min"

[run]
sandbox = "none"
"#
        .to_string()
    });
    let r = Repo { fx };
    r.ok(&["run", "--iterations", "1"]);
    let runs = r.attempts();
    let show = r.ok(&["show", &runs[1].0]);
    assert!(
        show.contains("decision   crash: evaluate: evaluator exit code 127"),
        "{show}"
    );
    assert!(
        show.contains("stderr     sh: 1: claude: not found\n"),
        "{show}"
    );
    assert!(!show.contains('{') && !show.contains("\\n"), "{show}");
    assert!(!show.contains("stdout_tail"), "{show}");
}

#[test]
fn worlds_rm_deletes_forks_and_refuses_what_it_must() {
    let r = Repo::ran();
    let runs = r.attempts();
    let tick = r.json(&["status", "--json"])["tick"].as_u64().unwrap();
    r.ok(&[
        "fork",
        "--at",
        &tick.to_string(),
        "--promote",
        &runs[1].0,
        "--name",
        "what-if",
    ]);
    let fork_tick = r.json(&["status", "--world", "what-if", "--json"])["tick"]
        .as_u64()
        .unwrap();
    r.ok(&[
        "fork",
        "--world",
        "what-if",
        "--at",
        &fork_tick.to_string(),
        "--promote",
        &runs[2].0,
        "--name",
        "deeper",
    ]);
    let names = |r: &Repo| -> Vec<String> {
        r.json(&["worlds", "--json"])
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&r), ["autoresearch:exp", "what-if", "deeper"]);
    // --world / --experiment: a world and its descendants.
    let only = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["worlds", "--json"];
        a.extend_from_slice(args);
        r.json(&a)
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(only(&["--world", "what-if"]), ["what-if", "deeper"]);
    assert_eq!(only(&["--world", "deeper"]), ["deeper"]);
    assert_eq!(only(&["--experiment", "exp"]).len(), 3);
    let err = r.fails(&["worlds", "--world", "nope"]);
    assert!(err.contains("no world named \"nope\""), "{err}");
    let err = r.fails(&["worlds", "rm", "exp"]);
    assert!(
        err.contains("an experiment's own world") && err.contains("--force"),
        "{err}"
    );
    let err = r.fails(&["worlds", "rm", "what-if"]);
    assert!(err.contains("has forks of its own (deeper)"), "{err}");
    let err = r.fails(&["worlds", "rm", "nope"]);
    assert!(err.contains("no world named \"nope\""), "{err}");
    assert_eq!(names(&r).len(), 3, "nothing deleted");
    // A loop running on the fork: refused even with --force.
    std::fs::write(r.fx.ctl.join("hold"), "").unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--world", "what-if", "--iterations", "1"])
        .current_dir(r.dir())
        .env_remove("AUTORESEARCH_LEDGER")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !r.fx.ctl.join("in_propose").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the loop never proposed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let err = r.fails(&["worlds", "rm", "what-if", "--force"]);
    assert!(
        err.contains("a loop is running on world \"what-if\""),
        "{err}"
    );
    let status = r.ok(&["status", "--world", "what-if"]);
    assert!(
        status.contains("in flight") && status.contains("(proposing, started "),
        "{status}"
    );
    assert!(!status.contains("no loop is running it"), "{status}");
    let v = r.json(&["status", "--world", "what-if", "--json"]);
    assert_eq!(v["loop_running"], serde_json::json!(true), "{v}");
    std::fs::remove_file(r.fx.ctl.join("hold")).unwrap();
    assert!(child.wait().unwrap().success());
    // With --force, the fork and its own fork, deepest first.
    let out = r.json(&["worlds", "rm", "what-if", "--force", "--json"]);
    assert_eq!(out["deleted"], serde_json::json!(["deeper", "what-if"]));
    assert_eq!(names(&r), ["autoresearch:exp"]);
    // The experiment reads as before; the fork's branch is left alone.
    assert_eq!(r.attempts(), runs);
    git(r.dir(), &["rev-parse", "--verify", "autoresearch/what-if"]);
    // The name is free again.
    r.ok(&[
        "fork",
        "--at",
        &tick.to_string(),
        "--promote",
        &runs[1].0,
        "--name",
        "what-if",
    ]);
}

#[test]
fn a_replay_chart_keeps_attempt_numbers_and_counts_changed_decisions() {
    let r = Repo::ran();
    // Under "higher is better" every lower score is a discard.
    r.ok(&[
        "replay",
        "--comparator",
        "scalar:score:max",
        "--name",
        "rev",
    ]);
    let out = r.fx.tmp.path().join("rev.svg");
    let v = r.json(&[
        "plot",
        "--world",
        "rev",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(v["world"], "rev");
    assert_eq!(v["changed"], 3, "{v}");
    let numbers: Vec<u64> = v["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [1, 2, 3, 4], "the original's numbers");
    let svg = std::fs::read_to_string(&out).unwrap();
    assert!(
        svg.contains("fork of autoresearch:exp: 3 decided otherwise"),
        "title"
    );
    assert!(
        svg.contains("world rev at tick"),
        "subtitle names world and tick"
    );
    assert!(
        svg.contains("decided by scalar:score:max"),
        "and the comparator"
    );
}

#[test]
fn completions_and_help_for_people() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .current_dir(tmp.path())
            .output()
            .unwrap()
    };
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = String::from_utf8_lossy(&out.stdout);
        for word in ["autoresearch", "checkout", "worlds", "experiment"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    let out = run(&["completions", "tcsh"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'tcsh'"));
    // Global options apart from the command's own, and every new command
    // with an example.
    for cmd in [
        "status",
        "show",
        "log",
        "best",
        "diff",
        "checkout",
        "completions",
    ] {
        let out = run(&[cmd, "--help"]);
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{cmd}");
        assert!(
            help.contains("Global options:") && help.contains("Example"),
            "{cmd}: {help}"
        );
    }
    // Commands in the order of the workflow.
    let help = String::from_utf8_lossy(&run(&["--help"]).stdout).into_owned();
    let at = |c: &str| {
        help.find(&format!("\n  {c} "))
            .unwrap_or_else(|| panic!("{c} not in {help}"))
    };
    let order = [
        "init", "run", "status", "log", "best", "show", "plot", "vote", "replay", "worlds",
        "ingest", "doctor",
    ];
    assert!(order.windows(2).all(|w| at(w[0]) < at(w[1])), "{help}");
    let help = String::from_utf8_lossy(&run(&["worlds", "rm", "--help"]).stdout).into_owned();
    assert!(
        help.contains("--force") && help.contains("Example"),
        "{help}"
    );
}

#[test]
fn several_experiments_without_a_config_ask_which() {
    let tmp = tempfile::tempdir().unwrap();
    let tsv = tmp.path().join("results.tsv");
    std::fs::write(
        &tsv,
        "commit\tval_bpb\tstatus\tdescription\na1b2c3d\t0.9979\tkeep\tbaseline\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .current_dir(tmp.path())
            .env_remove("AUTORESEARCH_LEDGER")
            .output()
            .unwrap()
    };
    for name in ["a", "b"] {
        assert!(
            run(&["ingest", "tsv", "results.tsv", "--experiment", name])
                .status
                .success()
        );
    }
    for cmd in [&["status"][..], &["log"], &["best"], &["plot"]] {
        let out = run(cmd);
        assert!(!out.status.success(), "{cmd:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("holds several experiments (a, b); choose one with --experiment"),
            "{cmd:?}: {err}"
        );
    }
    assert!(run(&["status", "--experiment", "b"]).status.success());
    assert!(run(&["log", "--world", "a"]).status.success());
}

#[test]
fn a_warning_is_printed_once_and_without_escape_codes() {
    let r = Repo::ran();
    // A local change in the user's checkout: the next keep leaves it alone
    // and warns once.
    std::fs::write(r.dir().join("params.py"), "LR = 0.5\nDEPTH = 8\n").unwrap();
    let out = r.run(&["-v", "run", "--iterations", "1"]);
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.matches("has local changes: left alone").count(),
        1,
        "{err}"
    );
    assert!(
        !err.contains('\x1b'),
        "escape codes in a non-terminal log: {err}"
    );
}
