//! Comparator specifications: the data behind every built-in comparator, read
//! from a spec string (`--comparator`) or from the `[compare]` table of
//! `autoresearch.toml`, and written back as a canonical spec string.
//!
//! Grammar of a spec string (whitespace around tokens is ignored):
//!
//! ```text
//! spec       = scalar | stat | pareto | judge | tournament | vote | all
//! scalar     = "scalar:" METRIC ":" DIR [":delta=" NUM]
//! stat       = "stat:" METRIC ":" DIR *(":" KEY "=" VALUE)
//!              KEY: alpha, beta, effect, worth, delta, min_n, max_n, batch, parallel, max_age (seconds), futility
//! pareto     = "pareto:" objective *("," objective)
//! objective  = METRIC ":" DIR [":eps=" NUM]
//! judge      = "judge:" ["timeout=" SECS ":"] COMMAND
//! tournament = "tournament:" spec
//! vote       = "vote" [":quorum=" N]
//! all        = "all:" member *(";" member)   ; a judge member takes the rest
//! member     = condition | spec
//! condition  = "metric(" METRIC ")" OP NUM   OP: == != <= >= < >
//! DIR        = "min" | "max" | "minimize" | "maximize"
//! ```

mod config;

use std::fmt;

pub use autoresearch_core::compare::Direction;

/// `scalar`: one metric, one sample (the mean when there are several).
#[derive(Clone, Debug, PartialEq)]
pub struct ScalarSpec {
    /// The metric compared, a key of the Results' outputs.
    pub metric: String,
    /// Which way the metric improves.
    pub direction: Direction,
    /// The improvement must exceed this (in the metric's unit) to keep.
    pub min_delta: f64,
}

/// `stat`: a sequential posterior-of-improvement rule on the experiment's noise model,
/// or Welch's t-test with adaptive sampling when no noise model is given.
#[derive(Clone, Debug, PartialEq)]
pub struct StatSpec {
    /// The metric compared, a key of the Results' outputs.
    pub metric: String,
    /// Which way the metric improves.
    pub direction: Direction,
    /// The false-keep rate. With a noise model: keep once the posterior
    /// probability of a gain above `min_delta` is at least `1 - alpha`.
    /// Without: Welch's overall level, spent evenly over its possible looks.
    pub alpha: f64,
    /// With a noise model: discard once the posterior probability of a
    /// gain worth having (above `worth`·σ, and `min_delta`) is at most this
    /// (futility).
    pub beta: f64,
    /// With a noise model: the smallest gain worth more samples, in noise
    /// σ: a candidate unlikely to beat it is discarded (0: any gain).
    pub worth: f64,
    /// With a noise model: the prior's standard deviation of a candidate's
    /// true improvement, in units of the noise σ.
    pub effect: f64,
    /// The improvement must exceed this to count.
    pub min_delta: f64,
    /// Without a noise model: samples per side before the first (Welch)
    /// test (at least 2). With one, the first test is after one sample.
    pub min_samples: u32,
    /// Sample budget per side, failed samples included (the incumbent's
    /// counted from the candidate's first sample); at it, an undecided
    /// candidate is discarded.
    pub max_samples: u32,
    /// Without a noise model: samples added per side at each look.
    pub batch: u32,
    /// With a noise model: the most samples (both sides together) asked
    /// for at one look, so that an executor that runs samples side by side
    /// (Slurm) can. Only a noisy evaluator (σ > 0) gets more than one: the
    /// rule asks for as many as its one-at-a-time looks would take before
    /// the first predicted decision, if the means stayed as they are.
    pub parallel: u32,
    /// Ignore incumbent samples evaluated more than this many seconds before
    /// the candidate's first sample, so that the incumbent is re-measured
    /// now and then to follow drift.
    pub max_age_secs: Option<u64>,
    /// Discard early when the one-sided p-value of the improvement exceeds
    /// this: 0.5 discards once the observed improvement is not above
    /// `min_delta`; 1 never discards before the budget.
    pub futility: f64,
}

impl StatSpec {
    /// The default overall false-keep rate.
    pub const DEFAULT_ALPHA: f64 = 0.05;
    /// The default futility bound on the posterior probability of a gain.
    pub const DEFAULT_BETA: f64 = 0.3;
    /// The default prior scale of true improvements, in noise σ.
    pub const DEFAULT_EFFECT: f64 = 1.0;
    /// The default smallest gain worth more samples, in noise σ.
    pub const DEFAULT_WORTH: f64 = 0.25;
    /// The default number of samples per side before the first test.
    pub const DEFAULT_MIN_SAMPLES: u32 = 3;
    /// The default sample budget per side.
    pub const DEFAULT_MAX_SAMPLES: u32 = 20;
    /// The default number of samples added per side at each look.
    pub const DEFAULT_BATCH: u32 = 2;
    /// The default number of samples asked for at one look of the posterior rule.
    pub const DEFAULT_PARALLEL: u32 = 1;
    /// The default futility bound: discard once the observed improvement is not above `min_delta`.
    pub const DEFAULT_FUTILITY: f64 = 0.5;

    /// A spec with the default level, budget and batch.
    pub fn new(metric: impl Into<String>, direction: Direction) -> Self {
        StatSpec {
            metric: metric.into(),
            direction,
            alpha: Self::DEFAULT_ALPHA,
            beta: Self::DEFAULT_BETA,
            effect: Self::DEFAULT_EFFECT,
            worth: Self::DEFAULT_WORTH,
            min_delta: 0.0,
            min_samples: Self::DEFAULT_MIN_SAMPLES,
            max_samples: Self::DEFAULT_MAX_SAMPLES,
            batch: Self::DEFAULT_BATCH,
            parallel: Self::DEFAULT_PARALLEL,
            max_age_secs: None,
            futility: Self::DEFAULT_FUTILITY,
        }
    }
}

/// One objective of a Pareto comparison.
#[derive(Clone, Debug, PartialEq)]
pub struct Objective {
    /// The metric, a key of the Results' outputs.
    pub metric: String,
    /// Which way the metric improves.
    pub direction: Direction,
    /// Differences within this are ties.
    pub epsilon: f64,
}

/// `judge`: an external command decides.
#[derive(Clone, Debug, PartialEq)]
pub struct JudgeSpec {
    /// Run with `sh -c`.
    pub command: String,
    /// Seconds the judge may run before it is killed and the comparison fails.
    pub timeout_secs: u64,
}

impl JudgeSpec {
    /// The default judge timeout: five minutes.
    pub const DEFAULT_TIMEOUT_SECS: u64 = 300;
}

/// Comparison operator of a gate condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `==`: exactly equal.
    Eq,
    /// `!=`: not exactly equal.
    Ne,
    /// `<=`: at most.
    Le,
    /// `>=`: at least.
    Ge,
    /// `<`: below.
    Lt,
    /// `>`: above.
    Gt,
}

impl Op {
    /// Longest tokens first, so that `<=` is not read as `<`.
    const TOKENS: [(&'static str, Op); 6] = [
        ("==", Op::Eq),
        ("!=", Op::Ne),
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("<", Op::Lt),
        (">", Op::Gt),
    ];

    /// Reads an operator token (`==`, `!=`, `<=`, `>=`, `<`, `>`); `None` for anything else.
    pub fn parse(s: &str) -> Option<Op> {
        Op::TOKENS
            .iter()
            .find(|(t, _)| *t == s.trim())
            .map(|(_, op)| *op)
    }

    /// The operator's token, as written in spec strings.
    pub fn as_str(self) -> &'static str {
        Op::TOKENS
            .iter()
            .find(|(_, op)| *op == self)
            .map_or("==", |(t, _)| t)
    }

    /// Whether `lhs OP rhs` holds. Equality is exact: gates compare counts
    /// and flags such as `tests_passed == 1`.
    pub fn holds(self, lhs: f64, rhs: f64) -> bool {
        match self {
            Op::Eq => lhs == rhs,
            Op::Ne => lhs != rhs,
            Op::Le => lhs <= rhs,
            Op::Ge => lhs >= rhs,
            Op::Lt => lhs < rhs,
            Op::Gt => lhs > rhs,
        }
    }
}

/// A gate condition on the candidate's results: every sample of `metric`
/// must satisfy `metric OP value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    /// The metric checked, a key of the candidate's Results' outputs. A candidate without it fails
    /// the condition.
    pub metric: String,
    /// How each sample is compared with `value`.
    pub op: Op,
    /// The threshold, in the metric's unit.
    pub value: f64,
}

/// One member of an all-of combination.
#[derive(Clone, Debug, PartialEq)]
pub enum Member {
    /// A gate: the candidate alone must satisfy it.
    Condition(Condition),
    /// A comparator that must keep the candidate.
    Compare(CompareSpec),
}

/// A built-in comparator, as data.
#[derive(Clone, Debug, PartialEq)]
pub enum CompareSpec {
    /// `scalar`: one metric, means compared, better by more than a delta.
    Scalar(ScalarSpec),
    /// `stat`: Welch's t-test with adaptive sampling.
    Stat(StatSpec),
    /// `pareto`: keep a candidate that dominates the incumbent on these objectives.
    Pareto(Vec<Objective>),
    /// `judge`: an external command decides.
    Judge(JudgeSpec),
    /// `tournament`: a round's candidates meet pairwise under this comparator; the winner meets the
    /// incumbent.
    Tournament(Box<CompareSpec>),
    /// `vote`: pending until people have voted on the candidate's run.
    Vote {
        /// Votes needed before deciding; a strict majority of `keep` keeps.
        quorum: u32,
    },
    /// `all`: every member must keep, checked in order; the first that does not decides.
    All(Vec<Member>),
}

/// A spec string or `[compare]` table that does not describe a comparator.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// A spec string that does not parse.
    #[error("comparator spec {spec:?}: {reason}")]
    Spec {
        /// The whole spec string.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A `[compare]` table with a missing, unknown or invalid key.
    #[error("[compare] {key}: {reason}")]
    Config {
        /// The key's dotted path inside `[compare]`.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

fn spec_err(spec: &str, reason: impl Into<String>) -> SpecError {
    SpecError::Spec {
        spec: spec.to_string(),
        reason: reason.into(),
    }
}

fn fmt_num(x: f64) -> String {
    // Rust's float Display is the shortest text that parses back exactly.
    format!("{x}")
}

impl fmt::Display for CompareSpec {
    /// The canonical spec string: options at their defaults are left out, and
    /// parsing it gives back an equal spec.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompareSpec::Scalar(s) => {
                write!(f, "scalar:{}:{}", s.metric, s.direction.short())?;
                if s.min_delta != 0.0 {
                    write!(f, ":delta={}", fmt_num(s.min_delta))?;
                }
                Ok(())
            }
            CompareSpec::Stat(s) => {
                write!(f, "stat:{}:{}", s.metric, s.direction.short())?;
                if s.alpha != StatSpec::DEFAULT_ALPHA {
                    write!(f, ":alpha={}", fmt_num(s.alpha))?;
                }
                if s.beta != StatSpec::DEFAULT_BETA {
                    write!(f, ":beta={}", fmt_num(s.beta))?;
                }
                if s.effect != StatSpec::DEFAULT_EFFECT {
                    write!(f, ":effect={}", fmt_num(s.effect))?;
                }
                if s.worth != StatSpec::DEFAULT_WORTH {
                    write!(f, ":worth={}", fmt_num(s.worth))?;
                }
                if s.min_delta != 0.0 {
                    write!(f, ":delta={}", fmt_num(s.min_delta))?;
                }
                if s.min_samples != StatSpec::DEFAULT_MIN_SAMPLES {
                    write!(f, ":min_n={}", s.min_samples)?;
                }
                if s.max_samples != StatSpec::DEFAULT_MAX_SAMPLES {
                    write!(f, ":max_n={}", s.max_samples)?;
                }
                if s.batch != StatSpec::DEFAULT_BATCH {
                    write!(f, ":batch={}", s.batch)?;
                }
                if s.parallel != StatSpec::DEFAULT_PARALLEL {
                    write!(f, ":parallel={}", s.parallel)?;
                }
                if let Some(age) = s.max_age_secs {
                    write!(f, ":max_age={age}")?;
                }
                if s.futility != StatSpec::DEFAULT_FUTILITY {
                    write!(f, ":futility={}", fmt_num(s.futility))?;
                }
                Ok(())
            }
            CompareSpec::Pareto(objs) => {
                f.write_str("pareto:")?;
                for (i, o) in objs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{}:{}", o.metric, o.direction.short())?;
                    if o.epsilon != 0.0 {
                        write!(f, ":eps={}", fmt_num(o.epsilon))?;
                    }
                }
                Ok(())
            }
            CompareSpec::Judge(j) => {
                f.write_str("judge:")?;
                if j.timeout_secs != JudgeSpec::DEFAULT_TIMEOUT_SECS {
                    write!(f, "timeout={}:", j.timeout_secs)?;
                }
                f.write_str(&j.command)
            }
            CompareSpec::Tournament(inner) => write!(f, "tournament:{inner}"),
            CompareSpec::Vote { quorum } => {
                f.write_str("vote")?;
                if *quorum != 1 {
                    write!(f, ":quorum={quorum}")?;
                }
                Ok(())
            }
            CompareSpec::All(members) => {
                f.write_str("all:")?;
                for (i, m) in members.iter().enumerate() {
                    if i > 0 {
                        f.write_str(";")?;
                    }
                    match m {
                        Member::Condition(c) => write!(
                            f,
                            "metric({}){}{}",
                            c.metric,
                            c.op.as_str(),
                            fmt_num(c.value)
                        )?,
                        Member::Compare(s) => write!(f, "{s}")?,
                    }
                }
                Ok(())
            }
        }
    }
}

// --- Spec strings ----------------------------------------------------------

fn parse_metric(whole: &str, s: &str) -> Result<String, SpecError> {
    let m = s.trim();
    let ok = !m.is_empty()
        && m.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'));
    if ok {
        Ok(m.to_string())
    } else {
        Err(spec_err(
            whole,
            format!("{m:?} is not a metric name (letters, digits, _ - . /)"),
        ))
    }
}

fn parse_direction(whole: &str, s: Option<&str>, metric: &str) -> Result<Direction, SpecError> {
    let s = s.ok_or_else(|| {
        spec_err(
            whole,
            format!("metric {metric:?} needs a direction: min or max"),
        )
    })?;
    Direction::parse(s).ok_or_else(|| {
        spec_err(
            whole,
            format!("direction {:?} of {metric:?} is not min or max", s.trim()),
        )
    })
}

fn parse_option<'a>(whole: &str, s: &'a str) -> Result<(&'a str, &'a str), SpecError> {
    s.split_once('=')
        .map(|(k, v)| (k.trim(), v.trim()))
        .ok_or_else(|| spec_err(whole, format!("option {:?} is not KEY=VALUE", s.trim())))
}

fn parse_f64(whole: &str, key: &str, v: &str) -> Result<f64, SpecError> {
    v.parse::<f64>()
        .ok()
        .filter(|x| x.is_finite())
        .ok_or_else(|| spec_err(whole, format!("{key}={v:?} is not a finite number")))
}

fn parse_u32(whole: &str, key: &str, v: &str) -> Result<u32, SpecError> {
    v.parse::<u32>()
        .map_err(|_| spec_err(whole, format!("{key}={v:?} is not a whole number")))
}

fn unknown_option(whole: &str, kind: &str, key: &str, known: &str) -> SpecError {
    spec_err(
        whole,
        format!("unknown option {key:?} for {kind} (known: {known})"),
    )
}

impl CompareSpec {
    /// The metrics this comparator decides on, with their directions, most
    /// important first (empty for a judge or a vote). Tools that show an
    /// experiment (`log`, `plot`) put the first one first.
    pub fn objectives(&self) -> Vec<(String, Direction)> {
        match self {
            CompareSpec::Scalar(s) => vec![(s.metric.clone(), s.direction)],
            CompareSpec::Stat(s) => vec![(s.metric.clone(), s.direction)],
            CompareSpec::Pareto(objs) => objs
                .iter()
                .map(|o| (o.metric.clone(), o.direction))
                .collect(),
            CompareSpec::Judge(_) | CompareSpec::Vote { .. } => Vec::new(),
            CompareSpec::Tournament(inner) => inner.objectives(),
            CompareSpec::All(members) => members
                .iter()
                .flat_map(|m| match m {
                    Member::Compare(c) => c.objectives(),
                    Member::Condition(_) => Vec::new(),
                })
                .collect(),
        }
    }

    /// Parses a spec string (see the module docs for the grammar) and checks
    /// its values ([`CompareSpec::validate`]).
    pub fn parse(spec: &str) -> Result<CompareSpec, SpecError> {
        let parsed = parse_spec(spec, spec.trim(), true)?;
        parsed.validate().map_err(|reason| spec_err(spec, reason))?;
        Ok(parsed)
    }

    /// Checks values that parse but make no sense (alpha outside (0, 1), a
    /// budget below the first look, a negative delta, a zero quorum...).
    /// Returns the first problem found.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            CompareSpec::Scalar(s) => non_negative("delta", s.min_delta),
            CompareSpec::Stat(s) => {
                if !(s.alpha > 0.0 && s.alpha < 1.0) {
                    return Err(format!("alpha={} must be between 0 and 1", s.alpha));
                }
                if !(s.beta > 0.0 && s.beta < 1.0) {
                    return Err(format!("beta={} must be between 0 and 1", s.beta));
                }
                if !(s.effect > 0.0 && s.effect.is_finite()) {
                    return Err(format!("effect={} must be above 0 (noise σ)", s.effect));
                }
                if !(s.worth >= 0.0 && s.worth.is_finite()) {
                    return Err(format!("worth={} must be 0 or more (noise σ)", s.worth));
                }
                non_negative("delta", s.min_delta)?;
                if s.min_samples < 2 {
                    return Err(format!(
                        "min_n={} must be at least 2 (a variance needs two samples)",
                        s.min_samples
                    ));
                }
                if s.max_samples < s.min_samples {
                    return Err(format!(
                        "max_n={} is below min_n={}",
                        s.max_samples, s.min_samples
                    ));
                }
                if s.batch == 0 {
                    return Err("batch must be at least 1".into());
                }
                if s.parallel == 0 {
                    return Err("parallel must be at least 1".into());
                }
                if !(s.futility > 0.0 && s.futility <= 1.0) {
                    return Err(format!("futility={} must be in (0, 1]", s.futility));
                }
                Ok(())
            }
            CompareSpec::Pareto(objs) => {
                if objs.is_empty() {
                    return Err("pareto needs at least one objective".into());
                }
                for o in objs {
                    non_negative(&format!("eps of {}", o.metric), o.epsilon)?;
                }
                Ok(())
            }
            CompareSpec::Judge(j) => {
                if j.command.trim().is_empty() {
                    return Err("judge needs a command".into());
                }
                if j.timeout_secs == 0 {
                    return Err("judge timeout must be at least 1 second".into());
                }
                Ok(())
            }
            CompareSpec::Tournament(inner) => {
                if matches!(**inner, CompareSpec::Tournament(_)) {
                    return Err("a tournament of tournaments is not supported".into());
                }
                inner.validate()
            }
            CompareSpec::Vote { quorum } => {
                if *quorum == 0 {
                    return Err("quorum must be at least 1".into());
                }
                Ok(())
            }
            CompareSpec::All(members) => {
                if members.is_empty() {
                    return Err("all: needs at least one member".into());
                }
                for m in members {
                    if let Member::Compare(s) = m {
                        s.validate()?;
                    }
                }
                Ok(())
            }
        }
    }
}

fn non_negative(key: &str, x: f64) -> Result<(), String> {
    if x >= 0.0 && x.is_finite() {
        Ok(())
    } else {
        Err(format!("{key}={x} must be a finite number >= 0"))
    }
}

fn parse_spec(whole: &str, s: &str, allow_all: bool) -> Result<CompareSpec, SpecError> {
    let (kind, rest) = match s.split_once(':') {
        Some((k, r)) => (k.trim(), Some(r)),
        None => (s.trim(), None),
    };
    let need_rest = |what: &str| {
        rest.filter(|r| !r.trim().is_empty())
            .ok_or_else(|| spec_err(whole, format!("{kind} needs {what}, as in {kind}:{what}")))
    };
    match kind {
        "scalar" => {
            let rest = need_rest("METRIC:min")?;
            let mut parts = rest.split(':');
            let metric = parse_metric(whole, parts.next().unwrap_or(""))?;
            let direction = parse_direction(whole, parts.next(), &metric)?;
            let mut spec = ScalarSpec {
                metric,
                direction,
                min_delta: 0.0,
            };
            for opt in parts {
                match parse_option(whole, opt)? {
                    ("delta" | "min_delta", v) => spec.min_delta = parse_f64(whole, "delta", v)?,
                    (k, _) => return Err(unknown_option(whole, "scalar", k, "delta")),
                }
            }
            Ok(CompareSpec::Scalar(spec))
        }
        "stat" => {
            let rest = need_rest("METRIC:min")?;
            let mut parts = rest.split(':');
            let metric = parse_metric(whole, parts.next().unwrap_or(""))?;
            let direction = parse_direction(whole, parts.next(), &metric)?;
            let mut spec = StatSpec::new(metric, direction);
            for opt in parts {
                match parse_option(whole, opt)? {
                    ("alpha", v) => spec.alpha = parse_f64(whole, "alpha", v)?,
                    ("beta", v) => spec.beta = parse_f64(whole, "beta", v)?,
                    ("effect", v) => spec.effect = parse_f64(whole, "effect", v)?,
                    ("worth", v) => spec.worth = parse_f64(whole, "worth", v)?,
                    ("delta" | "min_delta", v) => spec.min_delta = parse_f64(whole, "delta", v)?,
                    ("min_n" | "min_samples", v) => {
                        spec.min_samples = parse_u32(whole, "min_n", v)?
                    }
                    ("max_n" | "max_samples", v) => {
                        spec.max_samples = parse_u32(whole, "max_n", v)?
                    }
                    ("batch", v) => spec.batch = parse_u32(whole, "batch", v)?,
                    ("parallel", v) => spec.parallel = parse_u32(whole, "parallel", v)?,
                    ("futility", v) => spec.futility = parse_f64(whole, "futility", v)?,
                    ("max_age" | "max_age_secs", v) => {
                        spec.max_age_secs = Some(u64::from(parse_u32(whole, "max_age", v)?))
                    }
                    (k, _) => {
                        return Err(unknown_option(
                            whole,
                            "stat",
                            k,
                            "alpha, beta, effect, worth, delta, min_n, max_n, batch, parallel, max_age, futility",
                        ));
                    }
                }
            }
            Ok(CompareSpec::Stat(spec))
        }
        "pareto" => {
            let rest = need_rest("METRIC:min,METRIC:min")?;
            let mut objs = Vec::new();
            for obj in rest.split(',') {
                let mut parts = obj.split(':');
                let metric = parse_metric(whole, parts.next().unwrap_or(""))?;
                let direction = parse_direction(whole, parts.next(), &metric)?;
                let mut o = Objective {
                    metric,
                    direction,
                    epsilon: 0.0,
                };
                for opt in parts {
                    match parse_option(whole, opt)? {
                        ("eps" | "epsilon", v) => o.epsilon = parse_f64(whole, "eps", v)?,
                        (k, _) => {
                            return Err(unknown_option(whole, "a pareto objective", k, "eps"));
                        }
                    }
                }
                objs.push(o);
            }
            Ok(CompareSpec::Pareto(objs))
        }
        "judge" => {
            let rest = need_rest("COMMAND")?;
            let mut spec = JudgeSpec {
                command: rest.trim().to_string(),
                timeout_secs: JudgeSpec::DEFAULT_TIMEOUT_SECS,
            };
            if let Some(after) = rest.trim_start().strip_prefix("timeout=") {
                let (secs, cmd) = after.split_once(':').ok_or_else(|| {
                    spec_err(whole, "judge:timeout=SECS must be followed by :COMMAND")
                })?;
                spec.timeout_secs = u64::from(parse_u32(whole, "timeout", secs.trim())?);
                spec.command = cmd.trim().to_string();
            }
            Ok(CompareSpec::Judge(spec))
        }
        "tournament" => {
            let rest = need_rest("INNER-SPEC")?;
            Ok(CompareSpec::Tournament(Box::new(parse_spec(
                whole, rest, allow_all,
            )?)))
        }
        "vote" => {
            let mut quorum = 1;
            if let Some(rest) = rest {
                for opt in rest.split(':') {
                    match parse_option(whole, opt)? {
                        ("quorum", v) => quorum = parse_u32(whole, "quorum", v)?,
                        (k, _) => return Err(unknown_option(whole, "vote", k, "quorum")),
                    }
                }
            }
            Ok(CompareSpec::Vote { quorum })
        }
        "all" if allow_all => {
            let mut rest = need_rest("MEMBER;MEMBER")?;
            let mut members = Vec::new();
            loop {
                // A judge's command may contain ';': it takes the rest.
                let (item, tail) = if rest.trim_start().starts_with("judge:") {
                    (rest, None)
                } else {
                    match rest.split_once(';') {
                        Some((i, t)) => (i, Some(t)),
                        None => (rest, None),
                    }
                };
                members.push(parse_member(whole, item)?);
                match tail {
                    Some(t) => rest = t,
                    None => break,
                }
            }
            Ok(CompareSpec::All(members))
        }
        "all" => Err(spec_err(whole, "all: cannot be nested inside all:")),
        "" => Err(spec_err(whole, "empty comparator spec")),
        other => Err(spec_err(
            whole,
            format!(
                "unknown comparator kind {other:?} (known: scalar, stat, pareto, judge, tournament, vote, all)"
            ),
        )),
    }
}

fn parse_member(whole: &str, item: &str) -> Result<Member, SpecError> {
    let item = item.trim();
    if let Some(after) = item.strip_prefix("metric(") {
        let (metric, cond) = after
            .split_once(')')
            .ok_or_else(|| spec_err(whole, format!("{item:?}: metric( without )")))?;
        let metric = parse_metric(whole, metric)?;
        let cond = cond.trim();
        let op_len = cond
            .chars()
            .take_while(|c| matches!(c, '=' | '!' | '<' | '>'))
            .count();
        let op = Op::parse(&cond[..op_len]).ok_or_else(|| {
            spec_err(
                whole,
                format!("{item:?}: expected one of == != <= >= < > after metric({metric})"),
            )
        })?;
        let value = parse_f64(whole, &format!("metric({metric})"), cond[op_len..].trim())?;
        return Ok(Member::Condition(Condition { metric, op, value }));
    }
    Ok(Member::Compare(parse_spec(whole, item, false)?))
}
