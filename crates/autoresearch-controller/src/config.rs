//! `autoresearch.toml`: what to optimize, how to propose and evaluate, how to
//! compare, how long to go on. Parsed strictly: an unknown key, a wrong type
//! or a missing command is an error naming the key and its line.

pub use crate::decision_config::{ConfirmConfig, CostBudget};
use crate::sandbox::{ResourceLimits, SandboxConfig, SandboxMode};
use autoresearch_core::OutputSource;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod template;
pub use template::template;

/// The default config file name, at the repository root.
pub const CONFIG_FILE: &str = "autoresearch.toml";

/// Errors reading a config file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading config {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a key is unknown, missing or of the
    /// wrong type. The toml crate's message names the line, the column and
    /// the key.
    #[error("config {path}: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The toml crate's message.
        message: String,
    },
    /// A key parsed but its value is unusable (an empty command, a zero
    /// `parallel`, ...).
    #[error("config {path}: {key}: {reason}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// The key, dotted (`run.parallel`).
        key: String,
        /// What is wrong with its value.
        reason: String,
    },
}

/// A duration written as seconds (`90`) or with units (`"90s"`, `"30m"`, `"1h 30m"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span(pub Duration);

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Float(f64),
            Text(String),
        }
        let d = match Raw::deserialize(d)? {
            Raw::Secs(s) => Duration::from_secs(s),
            Raw::Float(s) if s.is_finite() && s >= 0.0 => {
                Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX)
            }
            Raw::Float(s) => {
                return Err(serde::de::Error::custom(format!(
                    "invalid duration {s}: expected a non-negative number of seconds"
                )));
            }
            Raw::Text(t) => {
                return parse_duration(&t)
                    .map(Span)
                    .map_err(serde::de::Error::custom);
            }
        };
        within_max(d, &format!("{}s", d.as_secs()))
            .map(Span)
            .map_err(serde::de::Error::custom)
    }
}

/// The longest duration a config or an option may give: 100 years (365-day
/// years). Longer ones are refused, not cut: a deadline past it could not
/// be computed on every platform.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

fn within_max(d: Duration, text: &str) -> Result<Duration, String> {
    if d > MAX_DURATION {
        return Err(format!(
            "invalid duration {text:?}: longer than the longest allowed, 100 years"
        ));
    }
    Ok(d)
}

/// Parses `"90s"`, `"30m"`, `"1h 30m"`, `"500ms"` or a bare number of
/// seconds. Errors: anything else, a negative or non-finite number, and a
/// duration over [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        return within_max(
            Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX),
            text,
        );
    }
    let d = humantime::parse_duration(t).map_err(|e| {
        format!("invalid duration {text:?}: {e} (e.g. \"90s\", \"30m\", \"1h 30m\")")
    })?;
    within_max(d, text)
}

/// How an evaluator's metrics are read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetricsFormat {
    /// `name: value` lines on stdout, as karpathy's train.py prints them.
    Lines,
    /// One JSON object line on stdout (the last one wins).
    Json,
    /// A JSON object in a file the command writes, relative to the checkout.
    File(String),
}

impl MetricsFormat {
    /// Where the executor should read the output from.
    pub fn source(&self) -> OutputSource {
        match self {
            MetricsFormat::File(p) => OutputSource::File(p.clone()),
            _ => OutputSource::Stdout,
        }
    }
}

impl<'de> Deserialize<'de> for MetricsFormat {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "lines" => Ok(MetricsFormat::Lines),
            "json" => Ok(MetricsFormat::Json),
            other => match other.strip_prefix("file:") {
                Some(p) if !p.is_empty() => Ok(MetricsFormat::File(p.to_string())),
                _ => Err(serde::de::Error::custom(format!(
                    "invalid metrics format {other:?}: expected \"lines\", \"json\" or \"file:PATH\""
                ))),
            },
        }
    }
}

/// `[propose]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProposeConfig {
    /// Shell command run in a fresh checkout of the head; its commit (or its
    /// uncommitted changes) is the candidate.
    pub command: String,
    /// How long the proposer may run before its whole process group is killed; 30 minutes by
    /// default.
    #[serde(default = "default_propose_timeout")]
    pub timeout: Span,
    /// A candidate adding or growing a file past this many bytes is
    /// refused (`"10MB"`, `"512k"` or a number of bytes).
    #[serde(default = "default_max_file_size")]
    pub max_file_size: Size,
    /// Whether a candidate may add or change a gitlink (a submodule, or a
    /// nested repository the proposer left in the checkout).
    #[serde(default)]
    pub allow_gitlinks: bool,
    /// Whether the proposer may use the network (a coding agent calls its
    /// model's API: on by default). Applies in the bwrap sandbox.
    #[serde(default = "yes")]
    pub network: bool,
}

/// A size in bytes, written as a number or with a unit (`"10MB"`, `"512k"`,
/// `"1GiB"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bytes(b) => Ok(Size(b)),
            Raw::Text(t) => parse_size(&t).map(Size).map_err(serde::de::Error::custom),
        }
    }
}

/// Parses `"10MB"`, `"512k"`, `"1GiB"` or a bare number of bytes (units
/// are powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {text:?} (e.g. \"10MB\", \"512k\")"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("invalid size unit {other:?} in {text:?}")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

/// `[evaluate]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluateConfig {
    /// Shell command run in a checkout of the candidate; prints metrics.
    pub command: String,
    /// How long one evaluation may run before its whole process group is killed; 10 minutes by
    /// default.
    #[serde(default = "default_evaluate_timeout")]
    pub timeout: Span,
    /// How the metrics are read from the evaluation; `lines` by default.
    #[serde(default = "default_metrics")]
    pub metrics: MetricsFormat,
    /// Paths (files, directories, globs) a candidate may not change, on top
    /// of the config file and the files `command` names.
    #[serde(default)]
    pub protect: Vec<String>,
    /// Files `command` names that candidates may change all the same (the
    /// training script an evaluator runs, say).
    #[serde(default)]
    pub editable: Vec<String>,
    /// Metric names every evaluation must report (besides the comparator's).
    #[serde(default)]
    pub require: Vec<String>,
    /// Whether the evaluator may use the network (`false`: it cannot fetch
    /// anything). Applies in the bwrap sandbox.
    #[serde(default = "yes")]
    pub network: bool,
}

/// `[run]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Candidates tried at once against the same head; 1 by default.
    #[serde(default = "one")]
    pub parallel: usize,
    /// Candidates to try; 0 means no limit.
    #[serde(default)]
    pub iterations: u64,
    /// Stop launching runs after this long.
    #[serde(default)]
    pub time_budget: Option<Span>,
    /// Stop after this many crashed runs in a row; 5 by default.
    #[serde(default = "default_max_crashes")]
    pub max_consecutive_crashes: u32,
    /// Bytes of each job's output kept in memory and in the ledger.
    #[serde(default = "default_output_limit")]
    pub output_limit: usize,
    /// A loop on another host that has not renewed its lease on the
    /// experiment's world for this long is taken to be gone.
    #[serde(default = "default_lease_timeout")]
    pub lease_timeout: Span,
    /// The jobs' sandbox: `"auto"` (bubblewrap when it runs here), `"bwrap"`
    /// (an error when it does not) or `"none"`.
    #[serde(default)]
    pub sandbox: SandboxMode,
    /// Extra paths jobs may write in the sandbox (tool caches: `~/.cache/uv`,
    /// `~/.cargo`; a coding agent's state, e.g. `~/.claude`).
    #[serde(default)]
    pub sandbox_writable: Vec<String>,
    /// Extra paths bound read-only in the sandbox.
    #[serde(default)]
    pub sandbox_read_only: Vec<String>,
    /// Environment variables jobs see besides `AUTORESEARCH_*`: names or
    /// patterns with one `*`; empty: a default list (PATH, HOME, locale,
    /// `*_API_KEY`, CUDA and Python/uv/cargo settings).
    #[serde(default)]
    pub env_allow: Vec<String>,
    /// Address space of each job process (`"8GiB"`); over it, allocations fail.
    #[serde(default)]
    pub memory_limit: Option<Size>,
    /// Open files of each job process.
    #[serde(default)]
    pub open_files: Option<u64>,
    /// Processes (and threads) of a whole job.
    #[serde(default)]
    pub processes: Option<u64>,
    /// Stop launching runs once the experiment has spent this much (see
    /// [`CostBudget`]); none by default.
    #[serde(default)]
    pub cost_budget: Option<CostBudget>,
    /// Where jobs run: `"local"` (default) or `"slurm"` (as Slurm batch
    /// jobs, configured by `[slurm]`).
    #[serde(default)]
    pub executor: ExecutorKind,
}

/// `[run] executor`: where jobs run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    /// Child processes on this machine.
    #[default]
    Local,
    /// Slurm batch jobs (`[slurm]`).
    Slurm,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            parallel: 1,
            iterations: 0,
            time_budget: None,
            max_consecutive_crashes: default_max_crashes(),
            output_limit: default_output_limit(),
            lease_timeout: default_lease_timeout(),
            sandbox: SandboxMode::default(),
            sandbox_writable: Vec::new(),
            sandbox_read_only: Vec::new(),
            env_allow: Vec::new(),
            memory_limit: None,
            open_files: None,
            processes: None,
            cost_budget: None,
            executor: ExecutorKind::Local,
        }
    }
}

impl Config {
    /// The sandbox settings of `[run]`, `[propose]` and `[evaluate]`.
    pub fn sandbox(&self) -> SandboxConfig {
        let r = &self.run;
        SandboxConfig {
            mode: r.sandbox,
            writable: r.sandbox_writable.iter().map(PathBuf::from).collect(),
            read_only: r.sandbox_read_only.iter().map(PathBuf::from).collect(),
            env_allow: r.env_allow.clone(),
            limits: ResourceLimits {
                memory_bytes: r.memory_limit.map(|s| s.0),
                open_files: r.open_files,
                processes: r.processes,
            },
            propose_network: self.propose.network,
            evaluate_network: self.evaluate.network,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    name: String,
    #[serde(default = "dot")]
    repo: String,
    #[serde(default)]
    branch: Option<String>,
    #[serde(default = "shell")]
    harness: String,
    propose: ProposeConfig,
    evaluate: EvaluateConfig,
    #[serde(default)]
    compare: Option<toml::Table>,
    #[serde(default)]
    run: RunConfig,
    #[serde(default)]
    confirm: Option<ConfirmConfig>,
    slurm: Option<toml::Table>,
}

/// A parsed `autoresearch.toml`.
#[derive(Clone, Debug)]
pub struct Config {
    /// The experiment name (world `autoresearch:{name}`).
    pub name: String,
    /// The repository, resolved against the config file's directory.
    pub repo: PathBuf,
    /// The branch the loop advances.
    pub branch: String,
    /// Recorded as Run.harness (e.g. `claude-code`); `shell` by default.
    pub harness: String,
    /// `[propose]`.
    pub propose: ProposeConfig,
    /// `[evaluate]`.
    pub evaluate: EvaluateConfig,
    /// `[compare]` as written (less `calibrate`): comparators live in their
    /// own crate, which turns this table into a `Comparator`.
    pub compare: toml::Table,
    /// `[compare] calibrate = k`: evaluate the head until it has k samples
    /// before the first candidate (the noise floor); 0 when absent.
    pub calibrate: u32,
    /// `[run]`, defaults when absent.
    pub run: RunConfig,
    /// `[confirm]`: held-out confirmation of candidates the comparator
    /// would keep; `None` when absent.
    pub confirm: Option<ConfirmConfig>,
    /// `[slurm]` as written: the Slurm executor lives in its own crate,
    /// which turns this table into its config.
    pub slurm: Option<toml::Table>,
    /// The file this was read from.
    pub path: PathBuf,
}

fn default_propose_timeout() -> Span {
    Span(Duration::from_secs(30 * 60))
}
fn default_evaluate_timeout() -> Span {
    Span(Duration::from_secs(10 * 60))
}
fn default_metrics() -> MetricsFormat {
    MetricsFormat::Lines
}
fn yes() -> bool {
    true
}
fn one() -> usize {
    1
}
fn default_max_crashes() -> u32 {
    5
}
fn default_output_limit() -> usize {
    64 * 1024
}
fn default_lease_timeout() -> Span {
    Span(Duration::from_secs(60))
}
fn dot() -> String {
    ".".into()
}
fn default_max_file_size() -> Size {
    Size(10 << 20)
}
fn shell() -> String {
    "shell".into()
}

impl Config {
    /// Reads and validates the config at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses config text; `path` names it in errors and anchors `repo`.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let invalid = |key: &str, reason: &str| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            reason: reason.to_string(),
        };
        if raw.name.trim().is_empty() || raw.name.contains(char::is_whitespace) {
            return Err(invalid("name", "must be a non-empty name without spaces"));
        }
        if !valid_ref_name(&raw.name) {
            return Err(invalid(
                "name",
                "must be usable in a git ref name (no ':', '~', '^', '?', '*', '[', '..'; no '/' at either end or twice; no part starting with '.')",
            ));
        }
        if raw.propose.command.trim().is_empty() {
            return Err(invalid("propose.command", "must not be empty"));
        }
        if raw.evaluate.command.trim().is_empty() {
            return Err(invalid("evaluate.command", "must not be empty"));
        }
        if raw.run.parallel == 0 {
            return Err(invalid("run.parallel", "must be at least 1"));
        }
        if raw.run.max_consecutive_crashes == 0 {
            return Err(invalid("run.max_consecutive_crashes", "must be at least 1"));
        }
        if let Some(c) = &raw.confirm {
            c.validate().map_err(|(key, why)| invalid(key, &why))?;
        }
        if let Some(b) = &raw.run.cost_budget {
            b.validate().map_err(|(key, why)| invalid(key, &why))?;
        }
        if raw.run.executor == ExecutorKind::Slurm && raw.slurm.is_none() {
            return Err(invalid(
                "run.executor",
                "\"slurm\" needs a [slurm] table (at least workdir, a directory every node sees)",
            ));
        }
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let repo = base.join(&raw.repo);
        // Absolute and without `./.` noise in every recorded path.
        let repo = repo.canonicalize().unwrap_or(repo);
        let branch = match raw.branch {
            Some(b) => b,
            None => checked_out_branch(&repo).map_err(|r| invalid("branch", &r))?,
        };
        if !valid_branch_name(&branch) {
            return Err(invalid(
                "branch",
                &format!(
                    "{branch:?} is not a valid git branch name (git check-ref-format --branch: no spaces, '..', ':', '~', '^', '?', '*', '[', no '/' at either end or twice, no leading '-', not HEAD)"
                ),
            ));
        }
        let mut compare = raw.compare.unwrap_or_default();
        let calibrate = match compare.remove("calibrate") {
            None => 0,
            Some(toml::Value::Integer(k)) => u32::try_from(k).map_err(|_| {
                invalid(
                    "compare.calibrate",
                    &format!("{k} is not a number of evaluations (0 or more)"),
                )
            })?,
            Some(v) => {
                return Err(invalid(
                    "compare.calibrate",
                    &format!(
                        "expected a whole number of evaluations, found {}",
                        v.type_str()
                    ),
                ));
            }
        };
        Ok(Config {
            name: raw.name,
            repo,
            branch,
            harness: raw.harness,
            propose: raw.propose,
            evaluate: raw.evaluate,
            compare,
            calibrate,
            slurm: raw.slurm,
            run: raw.run,
            confirm: raw.confirm,
            path: path.to_path_buf(),
        })
    }
}

/// The branch checked out in `repo`; `main` outside a repository (a
/// config read on its own), an error when HEAD is detached.
fn checked_out_branch(repo: &Path) -> Result<String, String> {
    let git = crate::git::Git::new(repo);
    if git.run(&["rev-parse", "--git-dir"]).is_err() {
        return Ok("main".into());
    }
    match git.checked_out_branch() {
        Ok(Some(b)) => Ok(b),
        _ => Err(format!(
            "not set, and no branch is checked out in {} (HEAD is detached): set `branch`",
            repo.display()
        )),
    }
}

/// Whether `s` is a valid git ref name below `refs/...` by `git
/// check-ref-format`'s rules: `/`-separated components, each valid
/// ([`valid_ref_component`]: none empty, so no leading, trailing or double
/// `/`), not `@`, not ending with `.`.
pub fn valid_ref_name(s: &str) -> bool {
    s != "@" && !s.ends_with('.') && s.split('/').all(valid_ref_component)
}

/// Whether `s` is a valid branch name (`git check-ref-format --branch`): a
/// valid ref name ([`valid_ref_name`]) that does not start with `-` and is
/// not `HEAD`.
pub fn valid_branch_name(s: &str) -> bool {
    valid_ref_name(s) && !s.starts_with('-') && s != "HEAD"
}

/// Whether `s` can be one component of a git ref name.
pub fn valid_ref_component(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && !s.ends_with(".lock")
        && !s.contains("..")
        && !s.contains("@{")
        && !s.chars().any(|c| c.is_control() || " ~^:?*[\\".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/r/autoresearch.toml"))
    }

    const MINIMAL: &str = "name = \"x\"\n[propose]\ncommand = \"p\"\n[evaluate]\ncommand = \"e\"\n";

    #[test]
    fn template_parses_with_its_defaults() {
        let c = parse(&template("exp", "main")).unwrap();
        assert_eq!(c.name, "exp");
        assert_eq!(c.repo, Path::new("/r/."));
        assert_eq!(c.propose.timeout, Span(Duration::from_secs(1800)));
        assert_eq!(c.evaluate.metrics, MetricsFormat::Lines);
        assert_eq!(c.compare["metric"].as_str(), Some("val_bpb"));
        assert_eq!(c.run.parallel, 1);
    }

    #[test]
    fn compare_calibrate_is_the_loops_and_checked() {
        let c = parse(&format!(
            "{MINIMAL}[compare]\nspec = \"stat:val:min\"\ncalibrate = 5\n"
        ))
        .unwrap();
        assert_eq!(c.calibrate, 5);
        // Taken out of the table the comparator reads.
        assert!(!c.compare.contains_key("calibrate"));
        assert_eq!(parse(MINIMAL).unwrap().calibrate, 0);
        for (bad, why) in [
            ("-1", "is not a number of evaluations"),
            (
                "\"5\"",
                "expected a whole number of evaluations, found string",
            ),
        ] {
            let e = parse(&format!("{MINIMAL}[compare]\ncalibrate = {bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("compare.calibrate") && e.contains(why), "{e}");
        }
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.branch, "main");
        assert!(c.compare.is_empty());
        assert_eq!(c.run.max_consecutive_crashes, 5);
    }

    #[test]
    fn errors_name_the_key_and_line() {
        let cases: &[(&str, &[&str])] = &[
            (
                "name = \"x\"\nbogus = 1\n[propose]\ncommand = \"p\"\n[evaluate]\ncommand = \"e\"\n",
                &["line 2", "bogus"],
            ),
            (
                "name = \"x\"\n[propose]\ncommand = \"p\"\n[evaluate]\ntimeout = \"1m\"\n",
                &["command", "line 4"],
            ),
            (
                "name = \"x\"\n[propose]\ncommand = \"p\"\n[evaluate]\ncommand = \"e\"\n[run]\nparallel = \"two\"\n",
                &["line 7", "parallel"],
            ),
            (
                "name = \"x\"\n[propose]\ncommand = \"p\"\ntimeout = \"soon\"\n[evaluate]\ncommand = \"e\"\n",
                &["line 4", "timeout", "soon"],
            ),
            (
                "name = \"x\"\n[propose]\ncommand = \"p\"\n[evaluate]\ncommand = \"e\"\nmetrics = \"xml\"\n",
                &["line 6", "xml"],
            ),
            (
                "name = \"x\"\n[propose]\ncommand = \"\"\n[evaluate]\ncommand = \"e\"\n",
                &["propose.command"],
            ),
            (
                "name = \"a:b\"\n[propose]\ncommand = \"p\"\n[evaluate]\ncommand = \"e\"\n",
                &["name"],
            ),
        ];
        for (text, needles) in cases {
            let err = parse(text).unwrap_err().to_string();
            for n in *needles {
                assert!(err.contains(n), "error {err:?} should mention {n:?}");
            }
        }
    }

    #[test]
    fn sizes_accept_bytes_and_units() {
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("1k").unwrap(), 1024);
        assert_eq!(parse_size("10MB").unwrap(), 10 << 20);
        assert_eq!(parse_size("2 GiB").unwrap(), 2 << 30);
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5 parsecs").is_err());
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.propose.max_file_size, Size(10 << 20));
        assert!(!c.propose.allow_gitlinks);
        let c = parse(&MINIMAL.replace(
            "command = \"p\"",
            "command = \"p\"\nmax_file_size = 4096\nallow_gitlinks = true",
        ))
        .unwrap();
        assert_eq!(c.propose.max_file_size, Size(4096));
        assert!(c.propose.allow_gitlinks);
    }

    #[test]
    fn durations_accept_seconds_and_units() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("0.5").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("-3").is_err());
        let c =
            parse(&MINIMAL.replace("command = \"p\"", "command = \"p\"\ntimeout = 2.5")).unwrap();
        assert_eq!(c.propose.timeout, Span(Duration::from_millis(2500)));
    }

    #[test]
    fn names_and_branches_must_be_git_ref_names() {
        for good in ["exp", "team/exp", "a.b", "a-b_c"] {
            assert!(valid_ref_name(good), "{good}");
        }
        for bad in [
            "", "/abs", "a//b", "a/", "a/.b", "a..b", "a b", "x.lock", "a.", "@", "a@{1}",
        ] {
            assert!(!valid_ref_name(bad), "{bad:?}");
        }
        assert!(valid_branch_name("autoresearch/nov25"));
        for bad in ["HEAD", "-x", "no such..branch"] {
            assert!(!valid_branch_name(bad), "{bad:?}");
        }
        let err = parse(&MINIMAL.replace("name = \"x\"", "name = \"a//b\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("name") && err.contains("git ref"), "{err}");
        let err = parse(&format!("branch = \"-x\"\n{MINIMAL}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a valid git branch name"), "{err}");
    }

    #[test]
    fn durations_past_a_hundred_years_are_refused_not_a_panic() {
        assert_eq!(
            parse_duration("36500d").unwrap(),
            Duration::from_secs(36_500 * 86_400)
        );
        for text in ["1e300", "500000000000y", "36501d", "18446744073709551615"] {
            let err = parse_duration(text).unwrap_err();
            assert!(err.contains("100 years"), "{text}: {err}");
        }
        for timeout in ["1e300", "9223372036854775807", "\"500000000000y\""] {
            let text = MINIMAL.replace(
                "command = \"p\"",
                &format!("command = \"p\"\ntimeout = {timeout}"),
            );
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains("100 years"), "timeout = {timeout}: {err}");
        }
    }
}
