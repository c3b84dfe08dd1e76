//! `cargo xtask bench decisions [--quick] [--seeds N] [--iterations N]
//! [--scenario NAME]... [--comparator SPEC[@K]]...`: how right the loop's
//! decisions are, on synthetic projects of known truth. `--comparator`
//! replaces the default settings (greedy `scalar` always runs first, as
//! the reference); `@K` sets `[compare] calibrate = K`.
//!
//! Each project is a repository holding six parameters (`params.txt`); its
//! true value is `f(p) = Σ w_j (p_j − o_j)²` (lower is better), with the
//! optimum `o` drawn from the seed and the weights `w` from the effect
//! profile: `even` (all 1) or `skewed` (10^(−j/2): a few parameters matter,
//! most barely, so many true effects are tiny). The proposer (a python3
//! script) moves one parameter by a normal step, drawn from the seed and the
//! proposal's number, so every comparator setting meets the same sequence of
//! proposals; the evaluator (python3) prints `val:` the true value plus
//! noise: normal with σ = `factor` × the median |true effect| of a proposal
//! from the start (measured by simulation first), or Student's t with 3 df
//! scaled to the same MAD (heavy tails), optionally with a drifting machine
//! (every evaluation reads σ/10 lower than the one before). Everything runs
//! through the real loop: a real git repository, the local executor's
//! slots, the redb ledger, real processes.
//!
//! For each scenario and seed, an oracle run (no noise, no drift, `scalar`)
//! gives the best final value this proposer reaches; then each comparator
//! setting runs the noisy project. Scored from the ledger and the commits:
//! precision (kept candidates truly better than their base), recall of all
//! true gains and of gains ≥ σ/2, the final true gap to the oracle, and
//! evaluator runs relative to greedy (`scalar`) on the same seed. One JSON
//! line per run, then one summary line per scenario and setting.

use super::emit;
use anyhow::{Context, bail};
use autoresearch_controller::{Controller, LocalExecutor, LoopConfig};
use autoresearch_core::lifecycle::attempts;
use autoresearch_core::{ComponentRegistry, OutcomeStatus, World};
use autoresearch_store::{RedbConfig, RedbStorage};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Parameters a project has.
const DIMS: usize = 6;
/// The proposer's step: normal with this standard deviation.
const STEP: f64 = 0.3;

const PROPOSE: &str = r#"
import json, os, random, sys
ctl = sys.argv[1]
m = json.load(open(os.path.join(ctl, "model.json")))
path = os.path.join(ctl, "n")
n = int(open(path).read()) + 1 if os.path.exists(path) else 1
open(path, "w").write(str(n))
rng = random.Random("%s-propose-%d" % (m["seed"], n))
p = [float(x) for x in open("params.txt").read().split()]
j = rng.randrange(len(p))
p[j] += rng.gauss(0.0, m["step"])
open("params.txt", "w").write(" ".join(repr(x) for x in p) + "\n")
"#;

const EVALUATE: &str = r#"
import json, math, os, random, sys
ctl = sys.argv[1]
m = json.load(open(os.path.join(ctl, "model.json")))
path = os.path.join(ctl, "calls")
k = int(open(path).read()) + 1 if os.path.exists(path) else 1
open(path, "w").write(str(k))
p = [float(x) for x in open("params.txt").read().split()]
f = sum(w * (x - o) ** 2 for w, x, o in zip(m["weights"], p, m["optimum"]))
rng = random.Random("%s-evaluate-%d" % (m["seed"], k))
s = m["sigma"]
if m["noise"] == "t3":
    chi2 = sum(rng.gauss(0.0, 1.0) ** 2 for _ in range(3))
    # Student's t, 3 df, divided by MAD(t3)/MAD(normal) = 0.7649/0.6745.
    e = s * rng.gauss(0.0, 1.0) / math.sqrt(chi2 / 3.0) / 1.1341
else:
    e = rng.gauss(0.0, s)
print("val: %r" % (f + e - m["drift"] * s * k))
"#;

/// One synthetic project.
#[derive(Clone, Copy)]
struct Scenario {
    name: &'static str,
    skewed: bool,
    t3: bool,
    drift: bool,
    /// σ as a multiple of the median true effect.
    factor: f64,
}

const SCENARIOS: [Scenario; 6] = [
    Scenario {
        name: "even-normal-0.5",
        skewed: false,
        t3: false,
        drift: false,
        factor: 0.5,
    },
    Scenario {
        name: "even-normal-1",
        skewed: false,
        t3: false,
        drift: false,
        factor: 1.0,
    },
    Scenario {
        name: "even-normal-2",
        skewed: false,
        t3: false,
        drift: false,
        factor: 2.0,
    },
    Scenario {
        name: "skewed-normal-1",
        skewed: true,
        t3: false,
        drift: false,
        factor: 1.0,
    },
    Scenario {
        name: "even-t3-1",
        skewed: false,
        t3: true,
        drift: false,
        factor: 1.0,
    },
    Scenario {
        name: "even-normal-1-drift",
        skewed: false,
        t3: false,
        drift: true,
        factor: 1.0,
    },
];

/// The reference setting: greedy keep-if-better.
const GREEDY: &str = "scalar:val:min";

/// The default comparator settings after greedy: the spec and `[compare] calibrate`.
const SETTINGS: [(&str, u32); 2] = [("stat:val:min", 0), ("stat:val:min", 5)];

/// A seeded stream of numbers (splitmix64), for what the Rust side draws.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u, v) = (self.next().max(1e-300), self.next());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// The true model of a project: weights, optimum, and the noise σ.
struct Truth {
    weights: [f64; DIMS],
    optimum: [f64; DIMS],
    median_effect: f64,
}

impl Truth {
    fn new(sc: &Scenario, seed: u64) -> Truth {
        let mut rng = Mix(seed.wrapping_mul(1_000_003));
        let mut weights = [1.0; DIMS];
        if sc.skewed {
            for (j, w) in weights.iter_mut().enumerate() {
                *w = 10f64.powf(-(j as f64) / 2.0);
            }
        }
        let mut optimum = [0.0; DIMS];
        for o in &mut optimum {
            *o = 2.0 * rng.next() - 1.0;
        }
        let mut t = Truth {
            weights,
            optimum,
            median_effect: 0.0,
        };
        // The median |true effect| of one proposal from the start.
        let start = [0.0; DIMS];
        let f0 = t.value(&start);
        let mut effects: Vec<f64> = (0..4000)
            .map(|_| {
                let mut p = start;
                let j = ((rng.next() * DIMS as f64) as usize).min(DIMS - 1);
                p[j] += STEP * rng.normal();
                (t.value(&p) - f0).abs()
            })
            .collect();
        effects.sort_by(f64::total_cmp);
        t.median_effect = effects[effects.len() / 2];
        t
    }

    fn value(&self, p: &[f64; DIMS]) -> f64 {
        (0..DIMS)
            .map(|j| self.weights[j] * (p[j] - self.optimum[j]).powi(2))
            .sum()
    }
}

fn python() -> &'static str {
    // The system interpreter starts in a fraction of a version manager's shim.
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// What one loop run did, scored against the truth.
struct Scored {
    line: Value,
    kept: usize,
    kept_true: usize,
    gains: usize,
    gains_found: usize,
    half_gains: usize,
    half_found: usize,
    final_value: f64,
    evaluations: u64,
}

/// Runs `iterations` of the loop on a fresh project and scores it.
#[allow(clippy::too_many_arguments, reason = "one run's whole description")]
async fn run_project(
    sc: &Scenario,
    truth: &Truth,
    seed: u64,
    spec: &str,
    calibrate: u32,
    sigma: f64,
    drift: f64,
    iterations: u64,
) -> anyhow::Result<Scored> {
    let tmp = tempfile::tempdir().context("creating a temp dir")?;
    let (repo, ctl) = (tmp.path().join("repo"), tmp.path().join("ctl"));
    std::fs::create_dir(&ctl)?;
    super::init_repo(&repo, "params.txt", "0 0 0 0 0 0\n")?;
    let model = json!({
        "seed": seed,
        "step": STEP,
        "weights": truth.weights,
        "optimum": truth.optimum,
        "sigma": sigma,
        "noise": if sc.t3 { "t3" } else { "normal" },
        "drift": drift,
    });
    std::fs::write(ctl.join("model.json"), model.to_string())?;
    std::fs::write(ctl.join("propose.py"), PROPOSE)?;
    std::fs::write(ctl.join("evaluate.py"), EVALUATE)?;
    let py = python();
    let c = ctl.display();
    let state_dir = repo.join(".autoresearch");
    let cfg = LoopConfig {
        primary_metric: Some("val".into()),
        iterations,
        max_samples: u32::MAX,
        calibrate,
        ..super::loop_config(
            "decisions",
            &repo,
            format!("{py} {c}/propose.py {c}"),
            format!("{py} {c}/evaluate.py {c}"),
            "val",
        )
    };
    let storage = Arc::new(
        RedbStorage::open(&state_dir.join("ledger.redb"), RedbConfig::default())
            .context("opening the ledger")?,
    );
    let comparator = autoresearch_compare::from_spec(spec)?;
    let executor = Arc::new(LocalExecutor::new(&state_dir));
    let controller = Controller::open(cfg, storage.clone(), comparator, executor).await?;
    let summary = Arc::new(controller).run().await?;
    let world = World::open(
        storage,
        Arc::new(ComponentRegistry::standard()),
        "autoresearch:decisions",
    )
    .await?;
    let mut values: HashMap<String, f64> = HashMap::new();
    let mut true_value = |commit: &str| -> anyhow::Result<f64> {
        if let Some(v) = values.get(commit) {
            return Ok(*v);
        }
        let text = super::git(&repo, &["show", &format!("{commit}:params.txt")])?;
        let mut p = [0.0; DIMS];
        for (x, s) in p.iter_mut().zip(text.split_whitespace()) {
            *x = s
                .parse()
                .with_context(|| format!("params of {commit}: {text}"))?;
        }
        let v = truth.value(&p);
        values.insert(commit.to_string(), v);
        Ok(v)
    };
    let (mut kept, mut kept_true, mut gains, mut gains_found, mut half, mut half_found) =
        (0, 0, 0, 0, 0, 0);
    let mut curse = Vec::new();
    for a in attempts(&world, "decisions") {
        let Some(o) = &a.outcome else { continue };
        if !matches!(o.status, OutcomeStatus::Keep | OutcomeStatus::Discard)
            || a.run.commit_hash.is_empty()
            || o.base_commit.is_empty()
        {
            continue;
        }
        let gain = true_value(&o.base_commit)? - true_value(&a.run.commit_hash)?;
        let is_kept = o.status == OutcomeStatus::Keep;
        if is_kept {
            kept += 1;
            kept_true += usize::from(gain > 0.0);
            if let Some(est) = o
                .descriptor()
                .ok()
                .and_then(|d| d.get("improvement").and_then(Value::as_f64))
            {
                curse.push((est - gain) / sigma.max(f64::MIN_POSITIVE));
            }
        }
        if gain > 0.0 {
            gains += 1;
            gains_found += usize::from(is_kept);
        }
        if gain >= sigma / 2.0 && gain > 0.0 {
            half += 1;
            half_found += usize::from(is_kept);
        }
    }
    let final_value = true_value(&summary.head)?;
    let evaluations: u64 = std::fs::read_to_string(ctl.join("calls"))
        .context("reading the evaluator's call count")?
        .trim()
        .parse()
        .context("the evaluator's call count")?;
    let ratio = |a: usize, b: usize| (b > 0).then(|| a as f64 / b as f64);
    let line = json!({
        "bench": "decisions",
        "scenario": sc.name,
        "seed": seed,
        "comparator": spec,
        "calibrate": calibrate,
        "sigma": sigma,
        "median_effect": truth.median_effect,
        "iterations": iterations,
        "kept": kept,
        "precision": ratio(kept_true, kept),
        "recall_all": ratio(gains_found, gains),
        "recall_half_sigma": ratio(half_found, half),
        "true_gains": gains,
        "gains_half_sigma": half,
        "final_true": final_value,
        "evaluator_runs": evaluations,
        "winners_curse_sigma": (!curse.is_empty()).then(|| curse.iter().sum::<f64>() / curse.len() as f64),
    });
    Ok(Scored {
        line,
        kept,
        kept_true,
        gains,
        gains_found,
        half_gains: half,
        half_found,
        final_value,
        evaluations,
    })
}

/// The options after `bench decisions`.
struct Options {
    seeds: u64,
    iterations: u64,
    scenarios: Vec<String>,
    /// Greedy first, then the settings compared with it.
    settings: Vec<(String, u32)>,
}

fn options(quick: bool, args: &[String]) -> anyhow::Result<Options> {
    let mut o = if quick {
        Options {
            seeds: 2,
            iterations: 20,
            scenarios: Vec::new(),
            settings: Vec::new(),
        }
    } else {
        Options {
            seeds: 3,
            iterations: 40,
            scenarios: Vec::new(),
            settings: Vec::new(),
        }
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let value = |it: &mut std::slice::Iter<'_, String>| -> anyhow::Result<u64> {
            let v = it.next().with_context(|| format!("{a} needs a number"))?;
            v.parse()
                .with_context(|| format!("{a} {v:?} is not a number"))
        };
        match a.as_str() {
            "--seeds" => o.seeds = value(&mut it)?,
            "--iterations" => o.iterations = value(&mut it)?,
            "--scenario" => {
                let name = it.next().context("--scenario needs a name")?;
                if !SCENARIOS.iter().any(|s| s.name == name) {
                    let known: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
                    bail!("--scenario {name:?} is not one of {known:?}");
                }
                o.scenarios.push(name.clone());
            }
            "--comparator" => {
                let v = it.next().context("--comparator needs a spec")?;
                let (spec, k) = match v.rsplit_once('@') {
                    Some((spec, k)) => (
                        spec,
                        k.parse()
                            .with_context(|| format!("--comparator {v:?}: calibrate {k:?}"))?,
                    ),
                    None => (v.as_str(), 0),
                };
                autoresearch_compare::from_spec(spec)
                    .with_context(|| format!("--comparator {v:?}"))?;
                o.settings.push((spec.to_string(), k));
            }
            other => bail!(
                "benchmark decisions: unknown option {other:?} (known: --seeds N, --iterations N, --scenario NAME, --comparator SPEC[@K])"
            ),
        }
    }
    if o.settings.is_empty() {
        o.settings = SETTINGS.iter().map(|(s, k)| (s.to_string(), *k)).collect();
    }
    o.settings.insert(0, (GREEDY.to_string(), 0));
    Ok(o)
}

/// Pooled figures of one scenario and setting over the seeds.
#[derive(Default)]
struct Pool {
    kept: usize,
    kept_true: usize,
    gains: usize,
    gains_found: usize,
    half: usize,
    half_found: usize,
    runs_ratio: Vec<f64>,
    gap: Vec<f64>,
    no_worse_than_greedy: usize,
    seeds: usize,
}

pub fn run(quick: bool, args: &[String]) -> anyhow::Result<()> {
    let o = options(quick, args)?;
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async {
        let chosen = SCENARIOS
            .iter()
            .filter(|s| o.scenarios.is_empty() || o.scenarios.iter().any(|n| n == s.name));
        for sc in chosen {
            let mut pools: Vec<Pool> = o.settings.iter().map(|_| Pool::default()).collect();
            for seed in 1..=o.seeds {
                let truth = Truth::new(sc, seed);
                let sigma = sc.factor * truth.median_effect;
                let drift = if sc.drift { 0.1 } else { 0.0 };
                eprintln!("decisions: {} seed {seed}: oracle", sc.name);
                let oracle =
                    run_project(sc, &truth, seed, GREEDY, 0, 0.0, 0.0, o.iterations).await?;
                let mut greedy: Option<(f64, u64)> = None;
                for (i, (spec, calibrate)) in o.settings.iter().enumerate() {
                    eprintln!(
                        "decisions: {} seed {seed}: {spec} calibrate={calibrate}",
                        sc.name
                    );
                    let mut s = run_project(
                        sc,
                        &truth,
                        seed,
                        spec,
                        *calibrate,
                        sigma,
                        drift,
                        o.iterations,
                    )
                    .await?;
                    let gap = s.final_value - oracle.final_value;
                    let (greedy_final, greedy_runs) =
                        *greedy.get_or_insert((s.final_value, s.evaluations));
                    let runs_ratio = s.evaluations as f64 / greedy_runs as f64;
                    s.line["oracle_final"] = json!(oracle.final_value);
                    s.line["gap_to_oracle"] = json!(gap);
                    s.line["runs_vs_greedy"] = json!(runs_ratio);
                    s.line["no_worse_than_greedy"] = json!(s.final_value <= greedy_final + 1e-12);
                    emit(s.line.clone());
                    let p = &mut pools[i];
                    p.kept += s.kept;
                    p.kept_true += s.kept_true;
                    p.gains += s.gains;
                    p.gains_found += s.gains_found;
                    p.half += s.half_gains;
                    p.half_found += s.half_found;
                    p.runs_ratio.push(runs_ratio);
                    p.gap.push(gap);
                    p.no_worse_than_greedy += usize::from(s.final_value <= greedy_final + 1e-12);
                    p.seeds += 1;
                }
            }
            for ((spec, calibrate), p) in o.settings.iter().zip(&pools) {
                let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
                let ratio = |a: usize, b: usize| (b > 0).then(|| a as f64 / b as f64);
                emit(json!({
                    "bench": "decisions",
                    "summary": true,
                    "scenario": sc.name,
                    "comparator": spec,
                    "calibrate": calibrate,
                    "seeds": p.seeds,
                    "iterations": o.iterations,
                    "precision": ratio(p.kept_true, p.kept),
                    "recall_all": ratio(p.gains_found, p.gains),
                    "recall_half_sigma": ratio(p.half_found, p.half),
                    "mean_gap_to_oracle": mean(&p.gap),
                    "seeds_no_worse_than_greedy": p.no_worse_than_greedy,
                    "runs_vs_greedy": mean(&p.runs_ratio),
                }));
            }
        }
        Ok::<(), anyhow::Error>(())
    })?;
    Ok(())
}
