//! Terminal progress of `autoresearch run`: a spinner per run in flight (on a
//! terminal), and one line per decided run on stdout, terminal or not:
//! `[N/M]`, id, commit, metrics (the mean over its samples, the
//! comparator's metric first), decision, head and the best so far (the
//! head's value of the comparator's metric). A run an earlier invocation
//! launched and this one decides (recovered after a crash, settled by
//! votes) is marked `[earlier]`, not counted against `--iterations`.

use autoresearch_controller::Event;
use autoresearch_core::num::fmt_f64_shown;
use autoresearch_core::{OutcomeStatus, short_commit};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::{HashMap, HashSet};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

/// Renders loop events. Spinners only when stderr is a terminal; the lines
/// for finished runs always go to stdout, so they can be piped or tested.
pub struct Progress {
    multi: Option<MultiProgress>,
    bars: Mutex<HashMap<String, ProgressBar>>,
    /// Candidates to try, when limited (the M of `[N/M]`).
    total: Option<u64>,
    /// The comparator's (first) metric: shown first, and as the best.
    primary: Option<String>,
    tally: Mutex<Tally>,
}

/// What the lines have counted so far.
#[derive(Default)]
struct Tally {
    /// Runs this invocation launched (their `Started` events).
    started: HashSet<String>,
    /// Candidates this invocation launched and saw decided.
    decided: u64,
    /// Runs of an earlier invocation this one decided.
    earlier: u64,
    /// The head's value of the primary metric.
    best: Option<(String, f64)>,
}

impl Progress {
    pub fn new(quiet: bool) -> Progress {
        let multi = (!quiet && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Progress {
            multi,
            bars: Mutex::new(HashMap::new()),
            total: None,
            primary: None,
            tally: Mutex::new(Tally::default()),
        }
    }

    /// Numbers each decided candidate `[N/M]` against `iterations` (0: no limit).
    pub fn with_total(mut self, iterations: u64) -> Progress {
        self.total = (iterations > 0).then_some(iterations);
        self
    }

    /// The comparator's metric (shown first and as the best), and the
    /// head's metrics when the loop starts (the best before any keep).
    pub fn with_primary(self, primary: Option<String>, head: &[(String, f64)]) -> Progress {
        let p = Progress { primary, ..self };
        let best = p.pick(head);
        if let Ok(mut t) = p.tally.lock() {
            t.best = best;
        }
        p
    }

    /// Runs of an earlier invocation this one decided (see the module docs).
    pub fn earlier(&self) -> u64 {
        self.tally.lock().map_or(0, |t| t.earlier)
    }

    /// The primary metric's value in `metrics`, else the first metric.
    fn pick(&self, metrics: &[(String, f64)]) -> Option<(String, f64)> {
        self.primary
            .as_ref()
            .and_then(|p| metrics.iter().find(|(k, _)| k == p))
            .or_else(|| metrics.first())
            .cloned()
    }

    /// The `[N/M]` counter and best-so-far of a decided run, updating the tally.
    fn count(
        &self,
        run_id: &str,
        status: &OutcomeStatus,
        metrics: &[(String, f64)],
    ) -> (String, String) {
        let Ok(mut tally) = self.tally.lock() else {
            return (String::new(), String::new());
        };
        if status.is_head()
            && let Some(best) = self.pick(metrics)
        {
            tally.best = Some(best);
        }
        let counter = if *status == OutcomeStatus::Baseline {
            "[base]".to_string()
        } else if !tally.started.contains(run_id) {
            tally.earlier += 1;
            "[earlier]".to_string()
        } else {
            tally.decided += 1;
            match self.total {
                Some(m) => format!("[{}/{m}]", tally.decided),
                None => format!("[{}]", tally.decided),
            }
        };
        let best = match &tally.best {
            Some((k, v)) => format!("best {k}={}", fmt_f64_shown(*v)),
            None => "best -".to_string(),
        };
        (counter, best)
    }

    fn line(&self, text: String) {
        match &self.multi {
            // Printed above the spinners, so the two do not garble each other.
            Some(m) => {
                if m.println(&text).is_err() {
                    println!("{text}");
                }
            }
            None => println!("{text}"),
        }
    }

    /// Prints a message above the spinners.
    pub fn note(&self, text: impl Into<String>) {
        let text = text.into();
        match &self.multi {
            Some(m) => {
                let _ = m.println(&text);
            }
            None => eprintln!("{text}"),
        }
    }

    pub fn event(&self, e: &Event) {
        match e {
            Event::Started { run_id, base } => {
                if let Ok(mut t) = self.tally.lock() {
                    t.started.insert(run_id.clone());
                }
                if let Some(m) = &self.multi {
                    let bar = m.add(ProgressBar::new_spinner());
                    bar.set_style(
                        ProgressStyle::with_template("{spinner} {prefix} {msg} {elapsed}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    bar.set_prefix(run_id.clone());
                    bar.set_message(format!("on {} starting", short_commit(base)));
                    bar.enable_steady_tick(Duration::from_millis(120));
                    if let Ok(mut bars) = self.bars.lock() {
                        bars.insert(run_id.clone(), bar);
                    }
                }
            }
            Event::Step { run_id, step } => {
                if let Ok(bars) = self.bars.lock()
                    && let Some(b) = bars.get(run_id)
                {
                    b.set_message(step.clone());
                }
            }
            Event::Finished {
                run_id,
                commit,
                status,
                reason,
                metrics,
                head,
            } => {
                if let Ok(mut bars) = self.bars.lock()
                    && let Some(b) = bars.remove(run_id)
                {
                    b.finish_and_clear();
                }
                let metrics_raw = metrics;
                // The comparator's metric first, then the others in order.
                let mut shown: Vec<&(String, f64)> = metrics.iter().collect();
                if let Some(i) = self
                    .primary
                    .as_ref()
                    .and_then(|p| shown.iter().position(|(k, _)| k == p))
                {
                    let m = shown.remove(i);
                    shown.insert(0, m);
                }
                let metrics = if shown.is_empty() {
                    "-".to_string()
                } else {
                    shown
                        .iter()
                        .take(3)
                        .map(|(k, v)| format!("{k}={}", fmt_f64_shown(*v)))
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                let commit = if commit.is_empty() {
                    "-------"
                } else {
                    short_commit(commit)
                };
                let (counter, best) = self.count(run_id, status, metrics_raw);
                self.line(format!(
                    "{counter} {run_id}  {commit}  {metrics}  {status:<8}  head {}  {best}  {reason}",
                    short_commit(head)
                ));
            }
            Event::Warning(w) => self.note(format!("warning: {w}")),
        }
    }
}

/// A spinner on stderr for a long operation with no natural count (an ingest,
/// a replay), with its elapsed time; hidden unless stderr is a terminal.
/// Finish it with [`Working::done`] (or drop it) before printing the result.
pub struct Working(Option<ProgressBar>);

impl Working {
    pub fn start(message: impl Into<String>) -> Working {
        if !std::io::stderr().is_terminal() {
            return Working(None);
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message(message.into());
        bar.enable_steady_tick(Duration::from_millis(120));
        Working(Some(bar))
    }

    pub fn done(self) {}
}

impl Drop for Working {
    fn drop(&mut self) {
        if let Some(bar) = self.0.take() {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(&str, f64)]) -> Vec<(String, f64)> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn lines_count_this_invocations_runs_and_show_the_comparators_metric_as_the_best() {
        // The head before the loop starts: its val_bpb is the best, though
        // memory_gb comes first.
        let p = Progress::new(true).with_total(2).with_primary(
            Some("val_bpb".into()),
            &m(&[("memory_gb", 12.5), ("val_bpb", 0.99)]),
        );
        // A run an earlier invocation launched (recovered as interrupted).
        let (counter, best) = p.count("old", &OutcomeStatus::Crash, &[]);
        assert_eq!(counter, "[earlier]");
        assert_eq!(best, "best val_bpb=0.99");
        // A run of this invocation, kept with a mean of two samples.
        p.event(&Event::Started {
            run_id: "r1".into(),
            base: "abc".into(),
        });
        let mean = (0.912 + 0.916873) / 2.0;
        let (counter, best) = p.count(
            "r1",
            &OutcomeStatus::Keep,
            &m(&[("memory_gb", 12.0), ("val_bpb", mean)]),
        );
        assert_eq!(counter, "[1/2]");
        assert_eq!(best, "best val_bpb=0.9144365");
        // A discard leaves the best.
        p.event(&Event::Started {
            run_id: "r2".into(),
            base: "abc".into(),
        });
        let (counter, best) = p.count(
            "r2",
            &OutcomeStatus::Discard,
            &m(&[("memory_gb", 1.0), ("val_bpb", 2.0)]),
        );
        assert_eq!(counter, "[2/2]");
        assert_eq!(best, "best val_bpb=0.9144365");
        assert_eq!(p.earlier(), 1);
    }

    #[test]
    fn without_a_comparator_metric_the_first_metric_is_the_best() {
        let p = Progress::new(true).with_primary(None, &[]);
        let (counter, best) = p.count("base", &OutcomeStatus::Baseline, &m(&[("score", 3.0)]));
        assert_eq!(
            (counter.as_str(), best.as_str()),
            ("[base]", "best score=3")
        );
    }
}
