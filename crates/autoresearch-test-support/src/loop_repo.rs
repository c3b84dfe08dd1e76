//! Repositories for the loop: a committed `score.txt` and `autoresearch.toml`
//! on `main`, a control directory beside the repository that the proposer
//! and evaluator scripts read and write (flag files, counters), and the
//! scripts themselves.

use crate::git::{git, init_main};
use std::path::{Path, PathBuf};

/// The evaluator of every loop fixture: prints the candidate's score.
pub const EVALUATE_SCORE: &str = "echo \"score: $(cat score.txt)\"";

/// A proposer writing a different score below 1 for every run.
pub const VARY_SCORE: &str =
    "echo \"0.$(echo $AUTORESEARCH_RUN_ID | cksum | cut -d' ' -f1)\" > score.txt";

/// A temp directory holding `repo/` (a repository on `main` whose one commit,
/// "start", holds `score.txt` = 100 and `autoresearch.toml`) and `ctl/` (the
/// control directory). Dropping it removes both.
pub struct LoopRepo {
    /// The temp directory holding both; kept so that dropping the fixture removes it.
    pub tmp: tempfile::TempDir,
    /// The repository (`repo/`), on `main`.
    pub dir: PathBuf,
    /// The control directory (`ctl/`) the scripts read and write.
    pub ctl: PathBuf,
}

impl LoopRepo {
    /// Builds the fixture with `config(ctl)` as its `autoresearch.toml`.
    pub fn new(config: impl FnOnce(&Path) -> String) -> LoopRepo {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("repo");
        let ctl = tmp.path().join("ctl");
        std::fs::create_dir(&dir).unwrap();
        std::fs::create_dir(&ctl).unwrap();
        init_main(&dir);
        std::fs::write(dir.join("score.txt"), "100\n").unwrap();
        std::fs::write(dir.join("autoresearch.toml"), config(&ctl)).unwrap();
        git(&dir, &["add", "-A"]);
        git(&dir, &["commit", "-q", "-m", "start"]);
        LoopRepo { tmp, dir, ctl }
    }
}

/// Every candidate is strictly better than all before it (a falling counter),
/// so every evaluated candidate is kept. Flag files in `ctl` make the proposer
/// or the evaluator hang, announcing it first: `slow_propose` (the proposer
/// writes its pid to `propose.pid`, touches `in_propose` and sleeps 30 s) and
/// `slow_eval` (the evaluator touches `in_eval` and sleeps 30 s, except on
/// the baseline).
pub fn falling_scores_config(ctl: &Path) -> String {
    let c = ctl.display();
    format!(
        r#"name = "exp"
branch = "main"

[propose]
command = '''
if [ -f {c}/slow_propose ]; then echo $$ > {c}/propose.pid; touch {c}/in_propose; sleep 30; fi
n=$(cat {c}/n 2>/dev/null || echo 100); n=$((n-1)); echo $n > {c}/n; echo $n > score.txt
'''
timeout = "60s"

[evaluate]
command = '''
if [ -f {c}/slow_eval ] && [ "$(cat score.txt)" != "100" ]; then touch {c}/in_eval; sleep 30; fi
echo "score: $(cat score.txt)"
'''
timeout = "60s"
protect = ["autoresearch.toml"]

[compare]
kind = "scalar"
metric = "score"
direction = "min"

[run]
# The control directory is outside the checkout: the jobs' sandbox lets
# them write it.
sandbox_writable = ["{c}"]
"#
    )
}

/// The proposer writes the next score of `ctl/scores` (one per line; see
/// [`write_scores`]); the evaluator prints it. Lower is better under a
/// scalar `compare` table. A flag file `hold_N` makes the Nth proposal touch
/// `in_N` and wait until `go` exists.
pub fn listed_scores_config(ctl: &Path, compare: &str) -> String {
    let c = ctl.display();
    format!(
        r#"name = "exp"
branch = "main"

[propose]
command = '''
n=$(cat {c}/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}/n
if [ -f {c}/hold_$n ]; then touch {c}/in_$n; while [ ! -f {c}/go ]; do sleep 0.05; done; fi
sed -n "${{n}}p" {c}/scores > score.txt
'''
timeout = "60s"

[evaluate]
command = 'echo "score: $(cat score.txt)"'
timeout = "60s"
protect = ["autoresearch.toml"]

[compare]
{compare}

[run]
sandbox_writable = ["{c}"]
"#
    )
}

/// Writes the scores the candidates of [`listed_scores_config`] take in turn.
pub fn write_scores(ctl: &Path, scores: &[u32]) {
    let list: String = scores.iter().map(|s| format!("{s}\n")).collect();
    std::fs::write(ctl.join("scores"), list).unwrap();
}
