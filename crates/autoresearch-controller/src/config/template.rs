//! The commented `autoresearch.toml` that `autoresearch init` writes: every
//! key with its default and what it does (text only; [`super::Config`]
//! parses it).

/// The commented `autoresearch.toml` that `autoresearch init` writes.
pub fn template(name: &str, branch: &str) -> String {
    format!(
        r#"# autoresearch.toml: the loop autoresearch runs on this repository.
# Every key below is shown with its default unless marked "required".

# The experiment's name (required). Its ledger world is "autoresearch:{{name}}",
# candidates are kept under refs/autoresearch/{{name}}/RUN_ID.
name = "{name}"
# The repository, relative to this file.
repo = "."
# The branch the loop advances on every improvement (default: the branch
# checked out here). A missing branch is created from the current HEAD.
branch = "{branch}"
# Recorded as each run's harness (e.g. "claude-code", "codex").
harness = "shell"

[propose]
# Run in a fresh checkout of the branch head, a private repository of its own
# (required). Commit the change or leave it uncommitted: the tree it leaves
# (ignored files excepted) becomes one commit on the head. The environment names
# AUTORESEARCH_RUN_ID, AUTORESEARCH_BASE_COMMIT, AUTORESEARCH_WORKTREE and
# AUTORESEARCH_RESULTS (a results.tsv of every past attempt). What it tried is
# its commit message, else the text it writes to the file $AUTORESEARCH_DESCRIPTION,
# else its last `description: ...` output line (else a diff summary).
command = 'claude -p "$(cat program.md)" --dangerously-skip-permissions'
timeout = "30m"
# A candidate adding a file larger than this, or a gitlink (a submodule or a
# nested repository), is refused.
max_file_size = "10MB"
allow_gitlinks = false

[evaluate]
# Run in a checkout of the candidate (required); prints its metrics.
# AUTORESEARCH_SAMPLE holds the sample index (for seeding repeated evaluations).
command = "uv run train.py"
timeout = "10m"
# How metrics are read: "lines" (name: value, as train.py prints them),
# "json" (one JSON object line on stdout) or "file:PATH" (a JSON file).
metrics = "lines"
# Paths a candidate may not change (files, directories, globs such as
# "data/**" or "*.sh"). This file and the files the command names are
# protected too, except those listed in `editable`.
protect = ["prepare.py"]
editable = ["train.py"]
# Metrics every evaluation must print (the comparator's metric always is).
require = []

[compare]
# What "better" means. Also settable with --comparator SPEC, e.g.
# "scalar:val_bpb:min" or "stat:val_bpb:min:alpha=0.05".
kind = "scalar"
metric = "val_bpb"
direction = "min"   # or "max"
min_delta = 0.0
# calibrate = 5     # first evaluate the head 5 times: the noise floor

[run]
parallel = 1                # candidates tried at once against the same head
iterations = 0              # candidates to try; 0 = no limit
# time_budget = "8h"        # stop launching runs after this long
max_consecutive_crashes = 5
output_limit = 65536        # bytes of each log kept in memory and in the ledger
# Jobs run sandboxed (bubblewrap, when installed): the filesystem read-only
# but for their checkout, a private /tmp and these folders. A coding agent
# that keeps state in your home needs it here, e.g. "~/.claude".
sandbox = "auto"            # "bwrap" (required) or "none"
sandbox_writable = []       # e.g. ["~/.claude", "~/.cache/uv"]
# env_allow = ["PATH", "HOME", "*_API_KEY"]   # variables jobs see (default: a safe list)
# memory_limit = "16GiB"    # per job process; processes = 512 per job
# Stop once the experiment has spent this much (all runs, all invocations):
# CPU time of every job, and/or a cost metric the proposer prints
# (cost, tokens, *_cost, *_tokens), summed.
# cost_budget = {{ cpu = "10h", metric = "cost", limit = 25.0 }}

# Held-out confirmation: a candidate the comparator would keep is measured
# again by this command, on data the search never sees (hidden from the
# proposer and the evaluator in the sandbox), and promoted only if it does not
# regress beyond `tolerance` against the incumbent's confirm value.
# [confirm]
# command = "uv run eval_heldout.py"
# metric = "heldout_bpb"
# direction = "min"
# tolerance = 0.0
# data = ["~/heldout"]
"#
    )
}
