//! `cargo xtask demo`: the whole product on a generated sample project, with
//! no network and no LLM. Builds the `autoresearch` binary, creates a git
//! repository holding a travelling-salesman heuristic under `target/demo/`,
//! runs the loop there (two candidates at once, the noise-aware comparator),
//! then shows the results table, the status, the progress chart, the world at
//! an earlier tick, a counterfactual replay under the scalar comparator and
//! the ingest of an archetype-runner state.db, and lists every artefact.
//!
//! Every step runs the real binary as a child process, bounded by a timeout,
//! and prints the command so that it can be typed again.

mod fixture;
mod runner_db;

use anyhow::{Context, bail};
use fixture::LoopSettings;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `cargo xtask demo` options.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Build the binary with the release profile (slower to build, faster loop).
    #[arg(long)]
    pub release: bool,
    /// Use this autoresearch binary instead of building one.
    #[arg(long, value_name = "PATH")]
    pub bin: Option<PathBuf>,
    /// Where to create the demo (recreated) [default: target/demo].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Fewer candidates and samples.
    #[arg(long)]
    pub quick: bool,
    /// Only create the sample repository and its agent, then stop.
    #[arg(long)]
    pub fixture_only: bool,
}

/// The experiment name in the generated autoresearch.toml.
const EXPERIMENT: &str = "tsp";
const WORLD: &str = "autoresearch:tsp";
const REPLAY_WORLD: &str = "tsp-replay-scalar";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d),
        None => workspace_root().join("target"),
    }
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| target_dir().join("demo"));
    let settings = if args.quick {
        LoopSettings {
            iterations: 7,
            max_samples: 5,
            evaluate_timeout_s: 3,
            ..LoopSettings::default()
        }
    } else {
        LoopSettings::default()
    };
    let mut demo = Demo {
        step: 0,
        steps: if args.fixture_only { 1 } else { 9 },
        bin: PathBuf::new(),
        dir: dir.clone(),
        repo: PathBuf::new(),
        timings: Vec::new(),
    };

    if !args.fixture_only {
        demo.header("build the autoresearch binary");
        let t = Instant::now();
        demo.bin = match &args.bin {
            Some(b) => b
                .canonicalize()
                .with_context(|| format!("the binary given with --bin: {}", b.display()))?,
            None => build(args.release)?,
        };
        if args.bin.is_none() {
            demo.timings.push(("build", t.elapsed()));
        }
        println!("binary: {}", demo.bin.display());
    }

    demo.header("create the sample project");
    let fx = fixture::create(&dir, &settings)
        .with_context(|| format!("creating the demo project in {}", dir.display()))?;
    demo.repo = fx.repo.clone();
    println!(
        "git repository {} (branch main): tsp.py, the heuristic the agent edits;\n\
         evaluate.py, protected, prints `tour_length: ...` over random cities seeded by\n\
         AUTORESEARCH_SAMPLE; autoresearch.toml. Agent: {} (fixed list of {} ideas).",
        fx.repo.display(),
        fx.agent.display(),
        settings.iterations
    );
    if args.fixture_only {
        println!("fixture ready in {}", fx.root.display());
        return Ok(());
    }

    demo.header("run the loop: 2 candidates at a time, noise-aware comparator");
    let t = Instant::now();
    let loop_cmd = [
        "run",
        "--parallel",
        &settings.parallel.to_string(),
        "--iterations",
        &settings.iterations.to_string(),
    ]
    .map(str::to_string);
    demo.show(&loop_cmd, Duration::from_secs(240))?;
    demo.timings.push(("loop", t.elapsed()));

    demo.header("the results table and the status");
    demo.show(&args_of(&["log", "--experiment", EXPERIMENT]), MINUTE)?;
    println!();
    demo.show(&args_of(&["status"]), MINUTE)?;

    demo.header("the progress chart");
    let svg = dir.join("progress.svg");
    let png = dir.join("progress.png");
    demo.show(
        &args_of(&["plot", "--out", &svg.display().to_string()]),
        MINUTE,
    )?;
    demo.show(
        &args_of(&["plot", "--out", &png.display().to_string()]),
        MINUTE,
    )?;

    demo.header("time travel: the world at an earlier tick");
    let head = world_head(
        &demo.capture(&args_of(&["worlds", "--json"]), MINUTE)?,
        WORLD,
    )?;
    let earlier = (head / 3).max(1);
    println!("world {WORLD} is at tick {head}; reading it at tick {earlier}:");
    demo.show(
        &args_of(&["runs", "--world", WORLD, "--at", &earlier.to_string()]),
        MINUTE,
    )?;
    let early_svg = dir.join(format!("progress-at-tick-{earlier}.svg"));
    demo.show(
        &args_of(&[
            "plot",
            "--at",
            &earlier.to_string(),
            "--out",
            &early_svg.display().to_string(),
        ]),
        MINUTE,
    )?;

    demo.header("counterfactual replay under the scalar comparator");
    println!(
        "Every candidate re-decided from its stored samples by one comparison of means,\n\
         with no job re-run: which changes would a noise-blind loop have kept?"
    );
    demo.show(
        &args_of(&[
            "replay",
            "--experiment",
            EXPERIMENT,
            "--comparator",
            "scalar:tour_length:min",
            "--name",
            REPLAY_WORLD,
        ]),
        MINUTE,
    )?;
    let replay_svg = dir.join("replay-scalar.svg");
    demo.show(
        &args_of(&[
            "plot",
            "--world",
            REPLAY_WORLD,
            "--experiment",
            EXPERIMENT,
            "--out",
            &replay_svg.display().to_string(),
        ]),
        MINUTE,
    )?;

    demo.header("ingest an archetype-runner state.db");
    let runner_dir = dir.join("runner");
    std::fs::create_dir_all(&runner_dir)
        .with_context(|| format!("creating {}", runner_dir.display()))?;
    let state_db = runner_dir.join("state.db");
    runner_db::create(&state_db)?;
    println!(
        "generated {} (6 agent sessions, 5 reports)",
        state_db.display()
    );
    let db = state_db.display().to_string();
    demo.show(
        &args_of(&["ingest", "runner", &db, "--world", "runner-fleet"]),
        MINUTE,
    )?;
    demo.show(&args_of(&["runs", "--world", "runner-fleet"]), MINUTE)?;

    demo.header("artefacts and what to try next");
    demo.timings.push(("total", started.elapsed()));
    let ledger = fx.repo.join(".autoresearch/ledger.redb");
    let artefacts: Vec<(&str, PathBuf)> = vec![
        ("sample repository (branch main advanced)", fx.repo.clone()),
        ("loop configuration", fx.repo.join("autoresearch.toml")),
        ("ledger (redb)", ledger),
        ("full logs of every job", fx.repo.join(".autoresearch/runs")),
        ("progress chart (SVG)", svg),
        ("progress chart (PNG)", png),
        ("chart at an earlier tick", early_svg),
        ("chart of the scalar replay fork", replay_svg),
        ("generated runner database", state_db),
        ("scripted agent", fx.agent.clone()),
        ("its idea counter", fx.agent_state.join("counter")),
    ];
    for (what, path) in &artefacts {
        let mark = if path.exists() { " " } else { "!" };
        println!("{mark} {what:<42} {}", path.display());
    }
    let explore = [
        ("git log --oneline main", "the kept changes"),
        (
            "git for-each-ref refs/autoresearch/",
            "every candidate, kept or not",
        ),
        (
            "autoresearch show RUN_ID",
            "one run: results, decision, diff stat, logs",
        ),
        (
            "autoresearch log --experiment tsp --format tsv",
            "karpathy's results.tsv",
        ),
        (
            "autoresearch history --world autoresearch:tsp RUN_ID",
            "every change to one run",
        ),
        (
            "autoresearch runs --world autoresearch:tsp --at TICK",
            "time travel",
        ),
        (
            "autoresearch replay --comparator stat:tour_length:min:alpha=0.01",
            "another counterfactual",
        ),
        (
            "autoresearch run --world tsp-replay-scalar --iterations 3",
            "continue the fork on branch autoresearch/tsp-replay-scalar",
        ),
        ("autoresearch plot --help", "chart options"),
    ];
    println!("\nExplore further:");
    println!("  alias autoresearch={}", demo.bin.display());
    println!("  cd {}", fx.repo.display());
    for (cmd, what) in explore {
        println!("  {cmd:<64} # {what}");
    }
    let times: Vec<String> = demo
        .timings
        .iter()
        .map(|(k, d)| format!("{k} {:.1}s", d.as_secs_f64()))
        .collect();
    println!("\ndemo finished: {}", times.join(", "));
    Ok(())
}

const MINUTE: Duration = Duration::from_secs(60);

fn args_of(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

struct Demo {
    step: usize,
    steps: usize,
    bin: PathBuf,
    dir: PathBuf,
    repo: PathBuf,
    timings: Vec<(&'static str, Duration)>,
}

impl Demo {
    fn header(&mut self, title: &str) {
        self.step += 1;
        println!("\n==> [{}/{}] {title}", self.step, self.steps);
    }

    fn command(&self, args: &[String]) -> Command {
        println!("$ autoresearch {}", args.join(" "));
        let mut cmd = Command::new(&self.bin);
        cmd.args(args).current_dir(&self.repo).stdin(Stdio::null());
        cmd
    }

    /// Runs a command with its output on the terminal.
    fn show(&self, args: &[String], limit: Duration) -> anyhow::Result<()> {
        let what = format!("autoresearch {}", args.join(" "));
        let child = self
            .command(args)
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        wait_bounded(child, &what, limit)
    }

    /// Runs a command and returns its standard output (kept in a file under
    /// the demo directory, read back up to 1 MiB).
    fn capture(&self, args: &[String], limit: Duration) -> anyhow::Result<String> {
        let what = format!("autoresearch {}", args.join(" "));
        let log = self.dir.join("capture.out");
        let file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = self
            .command(args)
            .stdout(file)
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        wait_bounded(child, &what, limit)?;
        let mut text = String::new();
        std::fs::File::open(&log)
            .and_then(|f| f.take(1 << 20).read_to_string(&mut text))
            .with_context(|| format!("reading the output of {what}"))?;
        Ok(text)
    }
}

/// Waits for `child` at most `limit`. On expiry it is interrupted twice (the
/// loop then stops and kills its jobs, as on Ctrl-C) and then killed.
fn wait_bounded(mut child: Child, what: &str, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("waiting for {what}"))?
        {
            if !status.success() {
                bail!("{what} failed ({status})");
            }
            return Ok(());
        }
        if Instant::now() >= deadline {
            let pid = child.id().to_string();
            for _ in 0..2 {
                let _ = Command::new("kill").args(["-INT", &pid]).status();
                std::thread::sleep(Duration::from_secs(2));
            }
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} did not finish within {}s", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Builds the CLI with cargo and returns the binary's path.
fn build(release: bool) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root()).args([
        "build",
        "--package",
        "autoresearch-cli",
        "--bin",
        "autoresearch",
    ]);
    if release {
        cmd.arg("--release");
    }
    println!(
        "$ cargo build --package autoresearch-cli --bin autoresearch{}",
        if release { " --release" } else { "" }
    );
    let child = cmd.spawn().context("starting cargo build")?;
    wait_bounded(child, "cargo build", Duration::from_secs(30 * 60))?;
    let bin = target_dir()
        .join(if release { "release" } else { "debug" })
        .join("autoresearch");
    if !bin.is_file() {
        bail!("cargo build succeeded but {} is missing", bin.display());
    }
    Ok(bin)
}

/// The head tick of world `name` in the output of `autoresearch worlds --json`.
fn world_head(json: &str, name: &str) -> anyhow::Result<u64> {
    let worlds: serde_json::Value =
        serde_json::from_str(json).context("parsing the output of `autoresearch worlds --json`")?;
    worlds
        .as_array()
        .into_iter()
        .flatten()
        .find(|w| w.get("name").and_then(|n| n.as_str()) == Some(name))
        .and_then(|w| w.get("head").and_then(|h| h.as_u64()))
        .with_context(|| format!("world {name} not in the output of `autoresearch worlds --json`"))
}
