//! `[slurm]`: where and how jobs are submitted.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the proposer runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProposeOn {
    /// On this machine, with the local executor (the default: a coding
    /// agent wants its credentials and the network, not a GPU).
    #[default]
    Local,
    /// As a Slurm job, like the evaluations.
    Slurm,
}

/// What a restarted controller does with jobs its killed predecessor left
/// queued or running.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnRestart {
    /// Waits for them to finish and records how they ended (the default).
    #[default]
    Wait,
    /// Cancels them (`scancel`) and records that.
    Cancel,
}

/// `[slurm]` of `autoresearch.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmConfig {
    /// A directory every node sees at the same path (a shared filesystem):
    /// checkouts under `{workdir}/slots`, job scripts and logs under
    /// `{workdir}/runs/{run_id}`.
    pub workdir: PathBuf,
    /// `--partition`; the cluster's default when absent.
    #[serde(default)]
    pub partition: Option<String>,
    /// `--time`, in Slurm's formats (`30`, `00:30:00`, `1-00:00:00`); when
    /// absent, the job's own timeout rounded up to a minute, plus one.
    #[serde(default)]
    pub time: Option<String>,
    /// `--gres` (`gpu:1`).
    #[serde(default)]
    pub gres: Option<String>,
    /// `--cpus-per-task`.
    #[serde(default)]
    pub cpus_per_task: Option<u32>,
    /// `--mem` (`32G`, `500M`).
    #[serde(default)]
    pub mem: Option<String>,
    /// More `sbatch` options, passed as written (`--account=myproj`).
    #[serde(default)]
    pub extra: Vec<String>,
    /// Where the proposer runs: `"local"` (default) or `"slurm"`.
    #[serde(default)]
    pub propose_on: ProposeOn,
    /// Jobs a killed controller left: `"wait"` (default) or `"cancel"`.
    #[serde(default)]
    pub on_restart: OnRestart,
    /// How often a job's state is asked for (`squeue`/`scontrol`), as a
    /// duration (`"1s"`, `"200ms"`); 1 s by default.
    #[serde(default, with = "span")]
    pub poll_interval: Option<Duration>,
}

mod span {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        humantime::parse_duration(&text)
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a duration: {e}")))
    }
}

/// A `[slurm]` table that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SlurmConfigError {
    /// The table did not parse (an unknown key, a wrong type).
    #[error("[slurm] in {}: {message}", path.display())]
    Parse {
        /// The config file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A value parsed but cannot be used.
    #[error("[slurm] {key} in {}: {reason}", path.display())]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// The key, e.g. `time`.
        key: String,
        /// Why, in one line.
        reason: String,
    },
}

impl SlurmConfig {
    /// The `[slurm]` table of the config file at `path` (which names it in
    /// errors and anchors a relative `workdir`), checked.
    pub fn from_table(table: toml::Table, path: &Path) -> Result<SlurmConfig, SlurmConfigError> {
        let mut cfg: SlurmConfig =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| SlurmConfigError::Parse {
                    path: path.to_path_buf(),
                    message: e.to_string().trim_end().to_string(),
                })?;
        let invalid = |key: &str, reason: String| SlurmConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            reason,
        };
        if cfg.workdir.as_os_str().is_empty() {
            return Err(invalid(
                "workdir",
                "must name a directory every node sees".into(),
            ));
        }
        if cfg.workdir.is_relative() {
            let base = path.parent().unwrap_or(Path::new("."));
            cfg.workdir = base.join(&cfg.workdir);
        }
        if let Some(t) = &cfg.time {
            slurm_minutes(t).ok_or_else(|| {
                invalid(
                    "time",
                    format!(
                        "{t:?} is not a Slurm time (minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS)"
                    ),
                )
            })?;
        }
        if let Some(m) = &cfg.mem {
            let digits = m.trim_end_matches(['K', 'M', 'G', 'T', 'k', 'm', 'g', 't']);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(
                    "mem",
                    format!("{m:?} is not a memory size (a number with K, M, G or T: \"32G\")"),
                ));
            }
        }
        if cfg.cpus_per_task == Some(0) {
            return Err(invalid("cpus_per_task", "must be at least 1".into()));
        }
        for (key, v) in [("partition", &cfg.partition), ("gres", &cfg.gres)] {
            if v.as_deref()
                .is_some_and(|s| s.trim().is_empty() || s.contains(char::is_whitespace))
            {
                return Err(invalid(key, format!("{v:?} must be one word")));
            }
        }
        if let Some(bad) = cfg.extra.iter().find(|o| !o.starts_with('-')) {
            return Err(invalid(
                "extra",
                format!("{bad:?} is not an sbatch option (options start with '-')"),
            ));
        }
        if cfg.poll_interval.is_some_and(|p| p.is_zero()) {
            return Err(invalid("poll_interval", "must be longer than 0".into()));
        }
        Ok(cfg)
    }

    /// How often a job's state is asked for.
    pub fn poll(&self) -> Duration {
        self.poll_interval.unwrap_or(Duration::from_secs(1))
    }
}

/// Minutes in a Slurm time limit (`sbatch --time` formats), rounded up;
/// `None` when it is not one.
pub fn slurm_minutes(t: &str) -> Option<u64> {
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let (days, rest) = match t.split_once('-') {
        Some((d, rest)) => (Some(num(d)?), rest),
        None => (None, t),
    };
    let parts: Vec<u64> = rest.split(':').map(num).collect::<Option<_>>()?;
    let secs = match (days, parts.as_slice()) {
        (None, [m]) => m * 60,
        (None, [m, s]) => m * 60 + s,
        (None, [h, m, s]) => h * 3600 + m * 60 + s,
        (Some(d), [h]) => d * 86400 + h * 3600,
        (Some(d), [h, m]) => d * 86400 + h * 3600 + m * 60,
        (Some(d), [h, m, s]) => d * 86400 + h * 3600 + m * 60 + s,
        _ => return None,
    };
    Some(secs.div_ceil(60))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SlurmConfig, SlurmConfigError> {
        let table: toml::Table = toml::from_str(text).expect("test TOML");
        SlurmConfig::from_table(table, Path::new("/exp/autoresearch.toml"))
    }

    #[test]
    fn the_issues_example_parses() {
        let c = parse(
            r#"workdir = "/shared/scratch/autoresearch"
partition = "gpu"
time = "00:30:00"
gres = "gpu:1"
cpus_per_task = 8
mem = "32G"
extra = ["--account=myproj"]
propose_on = "slurm"
on_restart = "cancel"
poll_interval = "250ms""#,
        )
        .expect("valid");
        assert_eq!(c.partition.as_deref(), Some("gpu"));
        assert_eq!(c.propose_on, ProposeOn::Slurm);
        assert_eq!(c.on_restart, OnRestart::Cancel);
        assert_eq!(c.poll(), Duration::from_millis(250));
        assert_eq!(c.extra, vec!["--account=myproj".to_string()]);
    }

    #[test]
    fn a_relative_workdir_is_the_config_files() {
        let c = parse(r#"workdir = "scratch""#).expect("valid");
        assert_eq!(c.workdir, PathBuf::from("/exp/scratch"));
        assert_eq!(c.propose_on, ProposeOn::Local);
        assert_eq!(c.on_restart, OnRestart::Wait);
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key) in [
            (
                r#"workdir = "/w"
time = "half an hour""#,
                "time",
            ),
            (
                r#"workdir = "/w"
mem = "lots""#,
                "mem",
            ),
            (
                r#"workdir = "/w"
cpus_per_task = 0"#,
                "cpus_per_task",
            ),
            (
                r#"workdir = "/w"
extra = ["account=x"]"#,
                "extra",
            ),
            (
                r#"workdir = "/w"
partition = "a b""#,
                "partition",
            ),
            (r#"workdir = """#, "workdir"),
        ] {
            match parse(text) {
                Err(SlurmConfigError::Invalid { key: k, path, .. }) => {
                    assert_eq!(k, key, "{text}");
                    assert_eq!(path, PathBuf::from("/exp/autoresearch.toml"));
                }
                other => panic!("{text}: expected an Invalid {key}, got {other:?}"),
            }
        }
        let unknown = parse("workdir = \"/w\"\nqueue = \"gpu\"").expect_err("unknown key");
        assert!(unknown.to_string().contains("queue"), "{unknown}");
        let propose = parse("workdir = \"/w\"\npropose_on = \"gpu\"").expect_err("bad word");
        assert!(
            propose.to_string().contains("propose_on") || propose.to_string().contains("gpu"),
            "{propose}"
        );
    }

    #[test]
    fn slurm_times_read_as_minutes() {
        for (t, m) in [
            ("30", Some(30)),
            ("0:10", Some(1)),
            ("01:00", Some(1)),
            ("00:30:00", Some(30)),
            ("1-00", Some(1440)),
            ("1-01:30", Some(1530)),
            ("2-00:00:01", Some(2881)),
            ("", None),
            ("1:2:3:4", None),
            ("x", None),
            ("-5", None),
        ] {
            assert_eq!(slurm_minutes(t), m, "{t:?}");
        }
    }
}
