//! `cargo xtask bench first-run`: what a new user waits for. The committed
//! HEAD of this repository is cloned into a temp dir and `cargo xtask demo`
//! runs there with an empty target dir (`CARGO_TARGET_DIR`), as on a fresh
//! clone (the cargo registry cache is the user's: no download is timed).
//! Prints one JSON line: the compile time (xtask's own, then the CLI and the
//! demo's helper), the demo's time after that and the wall time, with the
//! machine's CPU count and load average before and after, since other work on
//! the machine slows a compile down, and the CPU time it all took (`cpu_s`,
//! which other work does not change much). Takes minutes: a benchmark, not a test.
//!
//! Options: `--quick` (the demo's `--quick`), `--dev` or `--release` (the
//! demo's profile, dev by default), `--keep` (keep the temp dir and print
//! where it is).

use crate::cargo::workspace_root;
use anyhow::{Context, bail};
use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

pub fn run(args: &[OsString]) -> anyhow::Result<()> {
    let (mut demo_args, mut keep) = (Vec::new(), false);
    for a in args {
        match a.to_str() {
            Some("--quick") => demo_args.push("--quick"),
            Some("--dev") => demo_args.push("--dev"),
            Some("--release") => demo_args.push("--release"),
            Some("--keep") => keep = true,
            _ => bail!("bench first-run takes --quick, --dev, --release and --keep, got {a:?}"),
        }
    }
    let root = workspace_root();
    let commit = git(&root, &["rev-parse", "HEAD"])?;
    if !git(&root, &["status", "--porcelain", "--untracked-files=no"])?.is_empty() {
        eprintln!(
            "first-run: measuring the committed HEAD {commit}; local changes are not in the clone"
        );
    }
    let tmp = std::env::temp_dir().join(format!("autoresearch-first-run-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let result = measure(&root, &tmp, &commit, &demo_args);
    if keep {
        eprintln!("first-run: kept {}", tmp.display());
    } else {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

fn measure(root: &Path, tmp: &Path, commit: &str, demo_args: &[&str]) -> anyhow::Result<()> {
    let clone = tmp.join("autoresearch");
    let target = tmp.join("target");
    let timings = tmp.join("timings.json");
    let log = tmp.join("demo.log");
    eprintln!(
        "first-run: cloning {} into {}",
        root.display(),
        clone.display()
    );
    let out = Command::new("git")
        .args(["clone", "--quiet", "--no-local"])
        .arg(root)
        .arg(&clone)
        .output()
        .context("running git clone (is git installed?)")?;
    if !out.status.success() {
        bail!(
            "git clone failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    std::fs::create_dir_all(&target).with_context(|| format!("creating {}", target.display()))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let load_before = load_1m();
    eprintln!(
        "first-run: cargo xtask demo {} (output in {}; several minutes)",
        demo_args.join(" "),
        log.display()
    );
    let started = Instant::now();
    let file =
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let status = Command::new(cargo)
        .current_dir(&clone)
        .args(["xtask", "demo", "--timings-json"])
        .arg(&timings)
        .args(demo_args)
        .env("CARGO_TARGET_DIR", &target)
        .stdin(Stdio::null())
        .stdout(file.try_clone().context("sharing the log file")?)
        .stderr(file)
        .status()
        .context("starting cargo xtask demo in the clone")?;
    let wall = started.elapsed().as_secs_f64();
    let cpu = children_cpu_secs();
    if !status.success() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        bail!(
            "cargo xtask demo failed in the clone ({status}); its last lines:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let text = std::fs::read_to_string(&timings)
        .with_context(|| format!("reading the demo's timings {}", timings.display()))?;
    let t = flat_numbers(&text);
    let get = |k: &str| t.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
    let xtask = get("xtask_compile_s").unwrap_or(0.0);
    let build = get("build_s").unwrap_or(0.0);
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "{{\"bench\":\"first-run\",\"commit\":\"{commit}\",\"profile\":\"{}\",\"quick\":{},\
         \"cpus\":{cpus},\"load_1m_before\":{},\"load_1m_after\":{},\
         \"xtask_compile_s\":{xtask:.1},\"build_s\":{build:.1},\"compile_s\":{:.1},\
         \"loop_s\":{},\"demo_s\":{},\"total_s\":{wall:.1},\"cpu_s\":{}}}",
        // The demo builds in the dev profile unless told `--release`.
        if demo_args.contains(&"--release") {
            "release"
        } else {
            "dev"
        },
        demo_args.contains(&"--quick"),
        json_number(load_before),
        json_number(load_1m()),
        xtask + build,
        json_number(get("loop_s")),
        json_number(get("demo_s")),
        json_number(cpu),
    );
    Ok(())
}

/// CPU time (user and system) of this process's waited-for children and
/// theirs (`/proc/self/stat`'s cutime and cstime): what the compile and
/// the demo cost the machine, whatever else ran beside them.
fn children_cpu_secs() -> Option<f64> {
    // Ticks per second of /proc's times (USER_HZ).
    const USER_HZ: f64 = 100.0;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    // After the name: state is field 3 of the file, cutime 16 and cstime 17.
    let ticks = |i: usize| fields.get(i - 3)?.parse::<f64>().ok();
    Some((ticks(16)? + ticks(17)?) / USER_HZ)
}

/// The 1-minute load average (`/proc/loadavg`), when readable.
fn load_1m() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn json_number(v: Option<f64>) -> String {
    v.map_or_else(|| "null".into(), |v| format!("{v:.2}"))
}

/// The `"key": number` pairs of a flat JSON object (what the demo's
/// `--timings-json` writes), without a JSON library in xtask.
fn flat_numbers(text: &str) -> Vec<(String, f64)> {
    text.trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once(':')?;
            Some((
                k.trim().trim_matches('"').to_string(),
                v.trim().parse().ok()?,
            ))
        })
        .collect()
}

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .with_context(|| format!("running git {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
