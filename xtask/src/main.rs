//! Project automation, run as `cargo xtask <task>`:
//! - `cargo xtask demo`: the whole product on a generated sample repository;
//! - `cargo xtask bench NAME [--quick] [OPTIONS...]`: benchmarks, JSON lines on stdout.
//!
//! xtask is thin: `cargo xtask` compiles it first, so it depends on no
//! workspace crate (only anyhow) and compiles in seconds. What needs the
//! workspace (the demo's steps, the benchmarks) is the `autoresearch-devtools`
//! binary, which xtask builds together with the CLI in one cargo invocation,
//! in one profile, and then runs. `bench first-run` is measured here: it
//! times `cargo xtask demo` on a fresh clone.

mod cargo;
mod first_run;

use anyhow::{Context, bail};
use cargo::Profile;
use std::ffi::OsString;
use std::time::Instant;

const HELP: &str = "\
autoresearch project automation

Usage:
  cargo xtask demo [--quick] [--fixture-only] [--dir DIR] [--bin PATH] [--dev|--release]
                   [--timings-json PATH]
  cargo xtask bench NAME [--quick] [OPTIONS...]

demo   The whole product on a generated sample project, no network, no LLM.
       The CLI and the demo's helper are built once, together, in the dev
       profile (5 CPU-minutes from a fresh clone, against 7 in release): a
       fresh clone took 4 min 38 s on a nearly quiet 2-core machine, 4 min
       21 s of it compiling (measured); other builds sharing the cores make
       the compile longer (21 minutes measured at a load average of 11 to
       17). About 20 seconds once built. The summary gives the real times,
       compile included.
       --quick          fewer candidates and samples
       --fixture-only   only create the sample repository and its agent
       --dir DIR        where to create it [default: target/demo]
       --bin PATH       use this autoresearch binary (then only the helper is built)
       --release        build in the release profile instead of dev
       --timings-json PATH  also write the timings as JSON

bench  Run a benchmark (release build); one JSON object per line on stdout.
       NAME: ledger, ingest, loop (and others of autoresearch-devtools), or
       first-run: a fresh clone into a temp dir, an empty target dir, and the
       compile and demo times of `cargo xtask demo` (minutes; a benchmark,
       not a test).
       AUTORESEARCH_BENCH_DEBUG=1 runs them in the dev profile.
";

fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    let mut args = std::env::args_os().skip(1);
    let task = args.next().map(|a| a.to_string_lossy().into_owned());
    let rest: Vec<OsString> = args.collect();
    match task.as_deref() {
        Some("demo") => demo(&rest, started),
        Some("bench") => bench(&rest),
        None | Some("help" | "-h" | "--help") => {
            print!("{HELP}");
            Ok(())
        }
        Some(other) => bail!("unknown task {other:?}\n\n{HELP}"),
    }
}

/// `cargo xtask demo`: builds the CLI and the devtools binary in one cargo
/// invocation, then runs `autoresearch-devtools demo` with the build times.
fn demo(args: &[OsString], started: Instant) -> anyhow::Result<()> {
    // The dev profile: less to compile than release (measured with
    // `cargo xtask bench first-run`, docs/benchmarks.md), and the demo's
    // loop spends its time in Python, not in the binary.
    let mut profile = Profile::Dev;
    let mut pass: Vec<OsString> = Vec::new();
    let (mut fixture_only, mut own_binary) = (false, false);
    for a in args {
        match a.to_str() {
            Some("-h" | "--help") => {
                print!("{HELP}");
                return Ok(());
            }
            Some("--release") => profile = Profile::Release,
            Some("--dev") => profile = Profile::Dev,
            Some("--fixture-only") => {
                fixture_only = true;
                pass.push(a.clone());
            }
            Some("--bin") => {
                own_binary = true;
                pass.push(a.clone());
            }
            _ => pass.push(a.clone()),
        }
    }
    let xtask_compile =
        cargo::started_secs_ago().map(|s| (s - started.elapsed().as_secs_f64()).max(0.0));
    let built = Instant::now();
    let packages: &[&str] = if fixture_only || own_binary {
        &[cargo::DEVTOOLS]
    } else {
        &[cargo::CLI, cargo::DEVTOOLS]
    };
    println!("==> build the autoresearch binary and the demo's helper ({profile} profile)");
    cargo::build(profile, packages, true)?;
    let build_secs = built.elapsed().as_secs_f64();
    let mut cmd = std::process::Command::new(cargo::binary(profile, cargo::DEVTOOLS));
    cmd.arg("demo").args(&pass);
    if !fixture_only {
        cmd.arg("--build-secs").arg(format!("{build_secs:.3}"));
        if let Some(s) = xtask_compile {
            cmd.arg("--xtask-compile-secs").arg(format!("{s:.3}"));
        }
    }
    let status = cmd.status().with_context(|| {
        format!(
            "starting {}",
            cargo::binary(profile, cargo::DEVTOOLS).display()
        )
    })?;
    if !status.success() {
        bail!("the demo failed ({status})");
    }
    Ok(())
}

/// `cargo xtask bench NAME [--quick] [OPTIONS...]`: `first-run` here, every
/// other benchmark in the devtools binary, built in release (dev with
/// `AUTORESEARCH_BENCH_DEBUG=1`) with the same packages as the demo, so
/// that the two share one build.
fn bench(args: &[OsString]) -> anyhow::Result<()> {
    let Some(name) = args.first().and_then(|a| a.to_str()) else {
        bail!("bench needs a name (ledger, ingest, loop, first-run, ...)\n\n{HELP}");
    };
    if name == "first-run" {
        return first_run::run(&args[1..]);
    }
    let profile = if std::env::var_os("AUTORESEARCH_BENCH_DEBUG").is_some_and(|v| v == "1") {
        Profile::Dev
    } else {
        Profile::Release
    };
    eprintln!("xtask: building the benchmarks ({profile} profile)");
    cargo::build(profile, &[cargo::CLI, cargo::DEVTOOLS], false)?;
    let bin = cargo::binary(profile, cargo::DEVTOOLS);
    let status = std::process::Command::new(&bin)
        .arg("bench")
        .args(args)
        .status()
        .with_context(|| format!("starting {}", bin.display()))?;
    if !status.success() {
        bail!("benchmark {name} failed ({status})");
    }
    Ok(())
}
