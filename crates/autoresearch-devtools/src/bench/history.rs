//! `cargo xtask bench history [--quick] [--attempts N] [--repeat K] [--bin PATH]...`: the
//! CLI's history reads at scale (issue #19): wall time of the real
//! `autoresearch` binary (the one built beside this program) running
//! `status`, `log --limit 50`, `show RUN` and `plot --out x.svg` on an
//! experiment of 1,000,000 attempts (10,000 with `--quick`; `--attempts`
//! sets it). The ledger is written through the library by the `serve`
//! benchmark's builder; each command runs `--repeat` times (3 by default)
//! and the p50 and the slowest of its wall times are reported, one JSON
//! line per command. `--bin PATH` (repeatable) measures those binaries
//! instead, each on the same ledger (before and after a change, without
//! writing the ledger twice). `--materialize` also measures each binary on
//! a copy of the ledger without its current-state tables (as a ledger
//! written before them), where the commands materialize the world: the
//! reads before and after the current state, in one run. Targets (issue
//! #19): `status` < 50 ms, `log --limit 50` < 100 ms, `plot` < 2 s.

use super::emit;
use anyhow::{Context, Result, bail};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The benchmark's options.
struct Options {
    attempts: usize,
    repeat: usize,
    binaries: Vec<PathBuf>,
    materialize: bool,
}

/// Parses `--attempts N`, `--repeat K` and `--bin PATH`.
fn options(quick: bool, args: &[String]) -> Result<Options> {
    let mut attempts = if quick { 10_000 } else { 1_000_000 };
    let mut repeat = 3;
    let mut binaries = Vec::new();
    let mut materialize = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let target = match a.as_str() {
            "--materialize" => {
                materialize = true;
                continue;
            }
            "--attempts" => &mut attempts,
            "--repeat" => &mut repeat,
            "--bin" => {
                let path = it.next().context("--bin needs a path")?;
                binaries.push(PathBuf::from(path));
                continue;
            }
            other => bail!(
                "benchmark history: unknown option {other:?} (expected --attempts N, --repeat K, --bin PATH or --materialize)"
            ),
        };
        let v = it.next().with_context(|| format!("{a} needs a number"))?;
        *target = v
            .parse()
            .with_context(|| format!("{a} {v:?} is not a number"))?;
    }
    if attempts == 0 || repeat == 0 {
        bail!("benchmark history: --attempts and --repeat must be at least 1");
    }
    if binaries.is_empty() {
        binaries.push(autoresearch_binary()?);
    }
    for b in &binaries {
        if !b.is_file() {
            bail!("benchmark history: --bin {}: no such file", b.display());
        }
    }
    Ok(Options {
        attempts,
        repeat,
        binaries,
        materialize,
    })
}

/// `autoresearch` beside this program (xtask builds both into one target
/// directory).
fn autoresearch_binary() -> Result<PathBuf> {
    let path = std::env::current_exe()
        .context("locating this program")?
        .with_file_name("autoresearch");
    if !path.is_file() {
        bail!(
            "the autoresearch binary {} is missing (run this benchmark with `cargo xtask bench history`)",
            path.display()
        );
    }
    Ok(path)
}

pub fn run(quick: bool, args: &[String]) -> Result<()> {
    let Options {
        attempts,
        repeat,
        binaries,
        materialize,
    } = options(quick, args)?;
    let dir = tempfile::Builder::new()
        .prefix("bench-history")
        .tempdir_in(std::env::temp_dir())
        .context("creating the benchmark directory")?;
    let ledger = dir.path().join("ledger.redb");
    let t = Instant::now();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(super::serve::build(&ledger, attempts))?;
    let build_s = t.elapsed().as_secs_f64();
    eprintln!("history: {attempts} attempts written in {build_s:.1} s");
    let size = std::fs::metadata(&ledger)
        .with_context(|| format!("reading the size of {}", ledger.display()))?
        .len();
    emit(json!({
        "bench": "history", "attempts": attempts, "step": "build ledger",
        "build_s": (build_s * 10.0).round() / 10.0, "ledger_bytes": size,
    }));
    emit(series_bytes(&ledger, attempts)?);
    let svg = dir.path().join("x.svg");
    let middle = format!("run-{:07}", attempts / 2);
    let svg_arg = svg.display().to_string();
    let commands: [(&str, Vec<&str>); 4] = [
        ("status", vec!["status"]),
        ("log --limit 50", vec!["log", "--limit", "50"]),
        ("show RUN", vec!["show", &middle]),
        ("plot --out x.svg", vec!["plot", "--out", &svg_arg]),
    ];
    let mut ledgers = vec![("current state", ledger.clone())];
    if materialize {
        let copy = dir.path().join("materialize.redb");
        without_current_state(&ledger, &copy)?;
        ledgers.push(("materialize", copy));
    }
    for (path, ledger) in &ledgers {
        for bin in &binaries {
            for (name, cmd) in &commands {
                let mut ms = Vec::with_capacity(repeat);
                let mut bytes = 0;
                for _ in 0..repeat {
                    let (elapsed, out) = time(bin, ledger, dir.path(), cmd)?;
                    ms.push(elapsed);
                    bytes = out;
                }
                ms.sort_by(f64::total_cmp);
                emit(json!({
                    "bench": "history", "attempts": attempts, "command": name, "runs": repeat,
                    "read": path,
                    "wall_ms_p50": (ms[ms.len() / 2] * 10.0).round() / 10.0,
                    "wall_ms_max": (ms[ms.len() - 1] * 10.0).round() / 10.0,
                    "stdout_bytes": bytes, "binary": bin.display().to_string(),
                }));
            }
        }
    }
    Ok(())
}

/// Copies the ledger at `from` to `to` and drops the copy's current-state
/// and chart-series tables (the store's `current_*` and `series_*`), as a
/// ledger written before them:
/// reads of it materialize the world.
fn without_current_state(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    let db = redb::Database::create(to).with_context(|| format!("opening {}", to.display()))?;
    let txn = db.begin_write()?;
    for name in [
        "current_ticks",
        "current_index",
        "current_tally",
        "current_pending",
        "current_head",
        "series_head",
        "series_points",
        "series_crashed",
        "series_runs",
        "series_results",
    ] {
        txn.delete_table(redb::TableDefinition::<u64, u64>::new(name))
            .with_context(|| format!("dropping table {name} of {}", to.display()))?;
    }
    txn.commit()?;
    Ok(())
}

/// The bytes the ledger's chart-series tables (`series_*`) take, in all
/// (stored, metadata and fragmented, as redb counts them) and per attempt.
fn series_bytes(ledger: &Path, attempts: usize) -> Result<serde_json::Value> {
    use redb::{ReadableDatabase, ReadableTableMetadata};
    let db =
        redb::Database::open(ledger).with_context(|| format!("opening {}", ledger.display()))?;
    let txn = db.begin_read()?;
    let mut tables = serde_json::Map::new();
    let mut total = 0;
    let mut add = |name: &str, s: redb::TableStats| {
        let bytes = s.stored_bytes() + s.metadata_bytes() + s.fragmented_bytes();
        total += bytes;
        tables.insert(name.to_string(), json!(bytes));
    };
    add(
        "series_head",
        txn.open_table(redb::TableDefinition::<u64, &[u8]>::new("series_head"))?
            .stats()?,
    );
    add(
        "series_points",
        txn.open_table(redb::TableDefinition::<(u64, u64, u64), &[u8]>::new(
            "series_points",
        ))?
        .stats()?,
    );
    add(
        "series_crashed",
        txn.open_table(redb::TableDefinition::<(u64, u64, u64), &[u8]>::new(
            "series_crashed",
        ))?
        .stats()?,
    );
    add(
        "series_runs",
        txn.open_table(redb::TableDefinition::<(u64, u64), &[u8]>::new(
            "series_runs",
        ))?
        .stats()?,
    );
    add(
        "series_results",
        txn.open_table(redb::TableDefinition::<(u64, u64), u64>::new(
            "series_results",
        ))?
        .stats()?,
    );
    Ok(json!({
        "bench": "history", "attempts": attempts, "step": "series tables",
        "bytes": total, "bytes_per_attempt": total as f64 / attempts as f64,
        "tables": tables,
    }))
}

/// Runs `autoresearch --ledger LEDGER ARGS --experiment bench` in `cwd`
/// (a folder without a config) and returns its wall time in milliseconds
/// and the size of its stdout. Errors: the command failing.
fn time(bin: &Path, ledger: &Path, cwd: &Path, args: &[&str]) -> Result<(f64, usize)> {
    let t = Instant::now();
    let out = Command::new(bin)
        .current_dir(cwd)
        .arg("--ledger")
        .arg(ledger)
        .args(args)
        .args(["--experiment", "bench"])
        .output()
        .with_context(|| format!("starting {} {args:?}", bin.display()))?;
    let elapsed = t.elapsed().as_secs_f64() * 1000.0;
    if !out.status.success() {
        bail!(
            "autoresearch {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((elapsed, out.stdout.len()))
}
