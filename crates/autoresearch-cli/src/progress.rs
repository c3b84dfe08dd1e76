//! Terminal progress of `autoresearch run`: a spinner per run in flight (on a
//! terminal), and one line per decided run on stdout, terminal or not:
//! `[N/M]`, id, commit, metrics (the mean over its samples), decision, head
//! and the best so far (the head's first metric).

use autoresearch_controller::Event;
use autoresearch_core::num::fmt_f64;
use autoresearch_core::{OutcomeStatus, short_commit};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
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
    /// Candidates decided so far, and the head's metrics (best so far).
    tally: Mutex<(u64, Option<(String, f64)>)>,
}

impl Progress {
    pub fn new(quiet: bool) -> Progress {
        let multi = (!quiet && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Progress {
            multi,
            bars: Mutex::new(HashMap::new()),
            total: None,
            tally: Mutex::new((0, None)),
        }
    }

    /// Numbers each decided candidate `[N/M]` against `iterations` (0: no limit).
    pub fn with_total(mut self, iterations: u64) -> Progress {
        self.total = (iterations > 0).then_some(iterations);
        self
    }

    /// The `[N/M]` counter and best-so-far of a decided run, updating the tally.
    fn count(&self, status: &OutcomeStatus, metrics: &[(String, f64)]) -> (String, String) {
        let Ok(mut tally) = self.tally.lock() else {
            return (String::new(), String::new());
        };
        if status.is_head()
            && let Some((k, v)) = metrics.first()
        {
            tally.1 = Some((k.clone(), *v));
        }
        let counter = if *status == OutcomeStatus::Baseline {
            "[base]".to_string()
        } else {
            tally.0 += 1;
            match self.total {
                Some(m) => format!("[{}/{m}]", tally.0),
                None => format!("[{}]", tally.0),
            }
        };
        let best = match &tally.1 {
            Some((k, v)) => format!("best {k}={}", fmt_f64(*v)),
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
                let metrics = if metrics.is_empty() {
                    "-".to_string()
                } else {
                    metrics
                        .iter()
                        .take(3)
                        .map(|(k, v)| format!("{k}={}", fmt_f64(*v)))
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                let commit = if commit.is_empty() {
                    "-------"
                } else {
                    short_commit(commit)
                };
                let (counter, best) = self.count(status, metrics_raw);
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
