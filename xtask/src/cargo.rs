//! Building the workspace's binaries with cargo, and where they land.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The CLI's package (binary `autoresearch`).
pub const CLI: &str = "autoresearch-cli";
/// The demo's and benchmarks' package (binary `autoresearch-devtools`).
pub const DEVTOOLS: &str = "autoresearch-devtools";

/// A cargo profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// `dev`: binaries in `target/debug`.
    Dev,
    /// `release`: binaries in `target/release`.
    Release,
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Profile::Dev => "dev",
            Profile::Release => "release",
        })
    }
}

impl Profile {
    /// The folder of the target directory its binaries go to.
    fn dir(self) -> &'static str {
        match self {
            Profile::Dev => "debug",
            Profile::Release => "release",
        }
    }
}

/// The workspace's root (xtask's parent folder).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The target directory: `CARGO_TARGET_DIR`, else `target/` in the workspace.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d),
        None => workspace_root().join("target"),
    }
}

/// The path of `package`'s binary once built in `profile`.
pub fn binary(profile: Profile, package: &str) -> PathBuf {
    let name = if package == CLI {
        "autoresearch"
    } else {
        package
    };
    target_dir().join(profile.dir()).join(name)
}

/// Builds `packages` in one cargo invocation (so that they share every
/// dependency built once with one feature set), printing the command when
/// `echo`. Errors: cargo missing or failing.
pub fn build(profile: Profile, packages: &[&str], echo: bool) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut args = vec!["build".to_string()];
    if profile == Profile::Release {
        args.push("--release".into());
    }
    for p in packages {
        args.extend(["--package".to_string(), p.to_string()]);
    }
    if echo {
        println!("$ cargo {}", args.join(" "));
    }
    let status = Command::new(cargo)
        .current_dir(workspace_root())
        .args(&args)
        .status()
        .context("starting cargo build")?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    for p in packages {
        let bin = binary(profile, p);
        if !bin.is_file() {
            bail!("cargo build succeeded but {} is missing", bin.display());
        }
    }
    Ok(())
}

/// Seconds since this process started (Linux: `/proc`). `cargo run`
/// replaces itself with the program it runs (exec, same process), so under
/// `cargo xtask` this is how long cargo took to compile and start xtask.
/// `None` where `/proc` cannot tell.
pub fn started_secs_ago() -> Option<f64> {
    // Clock ticks per second of /proc's times: USER_HZ, 100 on every
    // architecture Linux runs on today.
    const USER_HZ: f64 = 100.0;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name is in parentheses and may hold spaces; after it come
    // the state (field 3 of the file), ..., the start time (field 22).
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let start_ticks: f64 = fields.get(22 - 3)?.parse().ok()?;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((uptime - start_ticks / USER_HZ).max(0.0))
}
