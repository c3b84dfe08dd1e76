//! The `[compare]` table of `autoresearch.toml`: a spec read key by key,
//! with errors naming the key (`compare.min_delta`).

use super::*;

/// Reads a `[compare]` table (or a member table inside one) whose keys are
/// named relative to `path` in errors.
struct Table<'a> {
    path: String,
    table: &'a toml::value::Table,
}

fn config_err(key: &str, reason: impl Into<String>) -> SpecError {
    SpecError::Config {
        key: key.to_string(),
        reason: reason.into(),
    }
}

impl<'a> Table<'a> {
    fn new(path: &str, value: &'a toml::Value) -> Result<Self, SpecError> {
        let table = value.as_table().ok_or_else(|| {
            config_err(
                path,
                format!("expected a table, found {}", value.type_str()),
            )
        })?;
        Ok(Table {
            path: path.to_string(),
            table,
        })
    }

    fn key(&self, k: &str) -> String {
        if self.path.is_empty() {
            k.to_string()
        } else {
            format!("{}.{k}", self.path)
        }
    }

    fn only(&self, allowed: &[&str]) -> Result<(), SpecError> {
        for k in self.table.keys() {
            if !allowed.contains(&k.as_str()) {
                return Err(config_err(
                    &self.key(k),
                    format!("unknown key (expected one of: {})", allowed.join(", ")),
                ));
            }
        }
        Ok(())
    }

    fn str(&self, k: &str) -> Result<Option<&'a str>, SpecError> {
        match self.table.get(k) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(config_err(
                &self.key(k),
                format!("expected a string, found {}", v.type_str()),
            )),
        }
    }

    fn req_str(&self, k: &str) -> Result<&'a str, SpecError> {
        self.str(k)?
            .ok_or_else(|| config_err(&self.key(k), "missing (required)"))
    }

    fn f64(&self, k: &str) -> Result<Option<f64>, SpecError> {
        match self.table.get(k) {
            None => Ok(None),
            Some(toml::Value::Float(x)) if x.is_finite() => Ok(Some(*x)),
            Some(toml::Value::Integer(i)) => Ok(Some(*i as f64)),
            Some(v) => Err(config_err(
                &self.key(k),
                format!("expected a finite number, found {v}"),
            )),
        }
    }

    fn u32(&self, k: &str) -> Result<Option<u32>, SpecError> {
        match self.table.get(k) {
            None => Ok(None),
            Some(toml::Value::Integer(i)) => u32::try_from(*i)
                .map(Some)
                .map_err(|_| config_err(&self.key(k), format!("{i} is out of range"))),
            Some(v) => Err(config_err(
                &self.key(k),
                format!("expected a whole number, found {}", v.type_str()),
            )),
        }
    }

    fn metric(&self, k: &str) -> Result<String, SpecError> {
        let m = self.req_str(k)?;
        parse_metric("", m).map_err(|_| {
            config_err(
                &self.key(k),
                format!("{m:?} is not a metric name (letters, digits, _ - . /)"),
            )
        })
    }

    fn direction(&self, k: &str) -> Result<Direction, SpecError> {
        let d = self.req_str(k)?;
        Direction::parse(d)
            .ok_or_else(|| config_err(&self.key(k), format!("{d:?} is not minimize or maximize")))
    }
}

impl CompareSpec {
    /// Reads the `[compare]` table of `autoresearch.toml`. Either a single
    /// `spec = "..."` key, or `kind` plus that kind's keys (see
    /// `docs/comparators.md`). Errors name the key, as `compare.min_delta`.
    pub fn from_toml(value: &toml::Value) -> Result<CompareSpec, SpecError> {
        let spec = from_table(&Table::new("compare", value)?, true)?;
        spec.validate()
            .map_err(|reason| config_err("compare", reason))?;
        Ok(spec)
    }
}

fn from_table(t: &Table<'_>, allow_all: bool) -> Result<CompareSpec, SpecError> {
    if let Some(spec) = t.str("spec")? {
        t.only(&["spec"])?;
        return match parse_spec(spec, spec.trim(), allow_all) {
            Ok(s) => Ok(s),
            Err(SpecError::Spec { reason, .. }) => Err(config_err(&t.key("spec"), reason)),
            Err(e) => Err(e),
        };
    }
    let kind = t.req_str("kind")?;
    match kind {
        "scalar" => {
            t.only(&["kind", "metric", "direction", "min_delta"])?;
            Ok(CompareSpec::Scalar(ScalarSpec {
                metric: t.metric("metric")?,
                direction: t.direction("direction")?,
                min_delta: t.f64("min_delta")?.unwrap_or(0.0),
            }))
        }
        "stat" => {
            t.only(&[
                "kind",
                "metric",
                "direction",
                "alpha",
                "beta",
                "effect",
                "worth",
                "min_delta",
                "min_samples",
                "max_samples",
                "batch",
                "parallel",
                "max_age_secs",
                "futility",
            ])?;
            let mut s = StatSpec::new(t.metric("metric")?, t.direction("direction")?);
            if let Some(a) = t.f64("alpha")? {
                s.alpha = a;
            }
            if let Some(b) = t.f64("beta")? {
                s.beta = b;
            }
            if let Some(e) = t.f64("effect")? {
                s.effect = e;
            }
            if let Some(x) = t.f64("worth")? {
                s.worth = x;
            }
            if let Some(d) = t.f64("min_delta")? {
                s.min_delta = d;
            }
            if let Some(n) = t.u32("min_samples")? {
                s.min_samples = n;
            }
            if let Some(n) = t.u32("max_samples")? {
                s.max_samples = n;
            }
            if let Some(n) = t.u32("batch")? {
                s.batch = n;
            }
            if let Some(n) = t.u32("parallel")? {
                s.parallel = n;
            }
            s.max_age_secs = t.u32("max_age_secs")?.map(u64::from);
            if let Some(x) = t.f64("futility")? {
                s.futility = x;
            }
            Ok(CompareSpec::Stat(s))
        }
        "pareto" => {
            t.only(&["kind", "objectives"])?;
            let key = t.key("objectives");
            let arr = t
                .table
                .get("objectives")
                .ok_or_else(|| config_err(&key, "missing (required)"))?
                .as_array()
                .ok_or_else(|| config_err(&key, "expected an array of tables"))?;
            let mut objs = Vec::new();
            for (i, v) in arr.iter().enumerate() {
                let o = Table::new(&format!("{key}[{i}]"), v)?;
                o.only(&["metric", "direction", "epsilon"])?;
                objs.push(Objective {
                    metric: o.metric("metric")?,
                    direction: o.direction("direction")?,
                    epsilon: o.f64("epsilon")?.unwrap_or(0.0),
                });
            }
            Ok(CompareSpec::Pareto(objs))
        }
        "judge" => {
            t.only(&["kind", "command", "timeout_secs"])?;
            Ok(CompareSpec::Judge(JudgeSpec {
                command: t.req_str("command")?.to_string(),
                timeout_secs: t
                    .u32("timeout_secs")?
                    .map_or(JudgeSpec::DEFAULT_TIMEOUT_SECS, u64::from),
            }))
        }
        "tournament" => {
            t.only(&["kind", "inner"])?;
            let key = t.key("inner");
            let inner = match t.table.get("inner") {
                None => return Err(config_err(&key, "missing (required)")),
                Some(toml::Value::String(s)) => {
                    parse_spec(s, s.trim(), allow_all).map_err(|e| match e {
                        SpecError::Spec { reason, .. } => config_err(&key, reason),
                        e => e,
                    })?
                }
                Some(v) => from_table(&Table::new(&key, v)?, allow_all)?,
            };
            Ok(CompareSpec::Tournament(Box::new(inner)))
        }
        "vote" => {
            t.only(&["kind", "quorum"])?;
            Ok(CompareSpec::Vote {
                quorum: t.u32("quorum")?.unwrap_or(1),
            })
        }
        "all" if allow_all => {
            t.only(&["kind", "members"])?;
            let key = t.key("members");
            let arr = t
                .table
                .get("members")
                .ok_or_else(|| config_err(&key, "missing (required)"))?
                .as_array()
                .ok_or_else(|| config_err(&key, "expected an array"))?;
            let mut members = Vec::new();
            for (i, v) in arr.iter().enumerate() {
                let mkey = format!("{key}[{i}]");
                let member = match v {
                    toml::Value::String(s) => parse_member(s, s).map_err(|e| match e {
                        SpecError::Spec { reason, .. } => config_err(&mkey, reason),
                        e => e,
                    })?,
                    v => {
                        let m = Table::new(&mkey, v)?;
                        if m.str("kind")? == Some("condition") {
                            m.only(&["kind", "metric", "op", "value"])?;
                            let op_text = m.req_str("op")?;
                            let op = Op::parse(op_text).ok_or_else(|| {
                                config_err(
                                    &m.key("op"),
                                    format!("{op_text:?} is not one of == != <= >= < >"),
                                )
                            })?;
                            Member::Condition(Condition {
                                metric: m.metric("metric")?,
                                op,
                                value: m.f64("value")?.ok_or_else(|| {
                                    config_err(&m.key("value"), "missing (required)")
                                })?,
                            })
                        } else {
                            Member::Compare(from_table(&m, false)?)
                        }
                    }
                };
                members.push(member);
            }
            Ok(CompareSpec::All(members))
        }
        "all" => Err(config_err(
            &t.key("kind"),
            "all cannot be nested inside all",
        )),
        other => Err(config_err(
            &t.key("kind"),
            format!(
                "unknown comparator kind {other:?} (known: scalar, stat, pareto, judge, tournament, vote, all)"
            ),
        )),
    }
}
