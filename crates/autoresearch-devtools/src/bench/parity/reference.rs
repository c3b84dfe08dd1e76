//! The Python reference's run: `bench.py` under `ANCHOR_PYTHON`, its lines
//! read back for the ratios.

use super::{Options, emit_as};
use anyhow::{Context, Result, ensure};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The reference's Python and bench script, when `ANCHOR_PYTHON` is set.
pub(super) struct Anchor {
    python: PathBuf,
    script: PathBuf,
}

impl Anchor {
    pub(super) fn from_env() -> Result<Option<Anchor>> {
        let Some(python) = std::env::var_os("ANCHOR_PYTHON") else {
            return Ok(None);
        };
        let script = match std::env::var_os("ANCHOR_BENCH") {
            Some(s) => PathBuf::from(s),
            None => Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../shared/anchors/archetype-py/bench.py"),
        };
        ensure!(
            script.is_file(),
            "ANCHOR_PYTHON is set but the reference bench {} does not exist (set ANCHOR_BENCH)",
            script.display()
        );
        Ok(Some(Anchor {
            python: python.into(),
            script,
        }))
    }

    /// Runs `bench.py` in `work` (kept, so its state.db can be reused)
    /// and returns its lines by phase; prints them when `print`.
    pub(super) fn run(
        &self,
        work: &Path,
        n: usize,
        ticks: usize,
        o: &Options,
        print: bool,
    ) -> Result<HashMap<String, Value>> {
        if print {
            eprintln!("parity: running the reference at N={n}, T={ticks} ...");
        }
        let out = std::process::Command::new(&self.python)
            .arg(&self.script)
            .args(["--n", &n.to_string(), "--ticks", &ticks.to_string()])
            .args(["--seed", &o.seed.to_string()])
            .args(["--update-frac", &o.update_frac.to_string()])
            .args(["--tt-reps", &o.tt_reps.to_string()])
            .arg("--workdir")
            .arg(work)
            .arg("--keep")
            .stderr(std::process::Stdio::null())
            .output()
            .with_context(|| {
                format!(
                    "running {} {}",
                    self.python.display(),
                    self.script.display()
                )
            })?;
        let mut phases = HashMap::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Ok(mut v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let Some(phase) = v.get("phase").and_then(Value::as_str).map(str::to_string) else {
                continue;
            };
            if !print {
            } else if phase != "updates" {
                emit_as(&mut v, "archetype-ecs", n, ticks);
            } else {
                // The per-tick list is long; the summary fields stay.
                let mut short = v.clone();
                if let Some(m) = short.as_object_mut() {
                    m.remove("tick_ms_all");
                }
                emit_as(&mut short, "archetype-ecs", n, ticks);
            }
            phases.insert(phase, v);
        }
        ensure!(
            out.status.success() && phases.contains_key("summary"),
            "the reference bench failed ({}) at N={n}, T={ticks}",
            out.status
        );
        Ok(phases)
    }
}
