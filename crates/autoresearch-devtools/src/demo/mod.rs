//! `cargo xtask demo`: the whole product on a generated sample project, with
//! no network and no LLM. xtask builds the `autoresearch` binary and this
//! one in one cargo invocation, then runs `autoresearch-devtools demo`,
//! which creates a git repository holding a travelling-salesman heuristic under `target/demo/`,
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
    /// The autoresearch binary [default: `autoresearch` beside this program,
    /// which xtask built with it].
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
    /// Seconds xtask spent compiling itself (from `cargo` starting to
    /// xtask starting), for the summary.
    #[arg(long, value_name = "SECS", hide = true)]
    pub xtask_compile_secs: Option<f64>,
    /// Seconds xtask spent building the binaries, for the summary.
    #[arg(long, value_name = "SECS", hide = true)]
    pub build_secs: Option<f64>,
    /// Also write the timings as a JSON object to this file (for
    /// `cargo xtask bench first-run`).
    #[arg(long, value_name = "PATH")]
    pub timings_json: Option<PathBuf>,
}

/// The experiment name in the generated autoresearch.toml.
const EXPERIMENT: &str = "tsp";
const WORLD: &str = "autoresearch:tsp";
const REPLAY_WORLD: &str = "tsp-replay-scalar";

fn workspace_root() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    crate_dir
        .ancestors()
        .nth(2)
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
        steps: if args.fixture_only { 1 } else { 8 },
        bin: PathBuf::new(),
        dir: dir.clone(),
        repo: PathBuf::new(),
        timings: Vec::new(),
    };

    if let Some(secs) = args.xtask_compile_secs {
        demo.timings
            .push(("xtask compile", Duration::from_secs_f64(secs)));
    }
    if let Some(secs) = args.build_secs {
        demo.timings.push(("build", Duration::from_secs_f64(secs)));
    }
    if !args.fixture_only {
        demo.bin = autoresearch_binary(args.bin.as_deref())?;
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
    demo.timings.push(("demo", started.elapsed()));
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
    let compiled: Duration = demo
        .timings
        .iter()
        .filter(|(k, _)| matches!(*k, "xtask compile" | "build"))
        .map(|(_, d)| *d)
        .sum();
    demo.timings.push(("total", compiled + started.elapsed()));
    let times: Vec<String> = demo
        .timings
        .iter()
        .map(|(k, d)| format!("{k} {}", minutes(*d)))
        .collect();
    println!(
        "\ndemo finished: {} (total: from `cargo xtask demo` starting to here, compile included)",
        times.join(", ")
    );
    if let Some(path) = &args.timings_json {
        let fields: serde_json::Map<String, serde_json::Value> = demo
            .timings
            .iter()
            .map(|(k, d)| (json_key(k), serde_json::json!(d.as_secs_f64())))
            .collect();
        std::fs::write(path, serde_json::Value::Object(fields).to_string())
            .with_context(|| format!("writing the timings to {}", path.display()))?;
    }
    Ok(())
}

/// A duration as people read it: `48.2s`, `3m 12s`.
fn minutes(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        format!("{}m {:02}s", (secs / 60.0) as u64, secs as u64 % 60)
    }
}

/// A timing's label as a JSON key: `xtask compile` gives `xtask_compile_s`.
fn json_key(label: &str) -> String {
    let words: Vec<&str> = label
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    format!("{}_s", words.join("_"))
}

/// The binary given with `--bin`, else `autoresearch` beside this program
/// (xtask builds both into one target directory).
fn autoresearch_binary(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let path = match given {
        Some(b) => b.to_path_buf(),
        None => std::env::current_exe()
            .context("locating this program")?
            .with_file_name("autoresearch"),
    };
    path.canonicalize().with_context(|| {
        format!(
            "the autoresearch binary {} (build it with `cargo build -p autoresearch-cli`, or run `cargo xtask demo`)",
            path.display()
        )
    })
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
