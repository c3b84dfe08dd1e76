"""The demo's scripted agent: no network, no LLM.

Run by the loop in a fresh worktree of the current head. Each call takes the
next idea from a fixed list (a counter file in STATE_DIR, locked, so that
parallel candidates get different ideas), edits the files the way a coding
agent would, and commits with the idea as the message. Among the ideas some
improve the tour, some make it worse or change nothing but noise, one breaks
the program, one hangs past the evaluation timeout and one edits the
protected evaluator.

Usage: python3 propose.py STATE_DIR
"""

import fcntl
import os
import re
import subprocess
import sys


def set_knob(name, value):
    def edit():
        with open("tsp.py") as f:
            text = f.read()
        new, count = re.subn(rf"^{name} = .*?(  #|$)", rf"{name} = {value}\1", text, count=1, flags=re.M)
        if count != 1:
            raise SystemExit(f"propose.py: knob {name} not found in tsp.py")
        with open("tsp.py", "w") as f:
            f.write(new)

    return edit


def replace_in(path, old, new):
    def edit():
        with open(path) as f:
            text = f.read()
        if old not in text:
            raise SystemExit(f"propose.py: {old!r} not found in {path}")
        with open(path, "w") as f:
            f.write(text.replace(old, new, 1))

    return edit


# (commit message, edit). The comments say what the evaluator will find.
IDEAS = [
    # Pure noise: cities are random anyway, so this only changes the draw.
    ("visit the cities in shuffled order", set_knob("CONSTRUCTION", '"random"')),
    # A large, real improvement.
    ("nearest-neighbour construction", set_knob("CONSTRUCTION", '"nearest_neighbour"')),
    # A clear improvement.
    ("one 2-opt pass", set_knob("IMPROVEMENT", '"two_opt_pass"')),
    # Breaks the program: a syntax error.
    ("memoise dist() with lru_cache", replace_in("tsp.py", "def dist(a, b):", "@lru_cache(maxsize=None\ndef dist(a, b):")),
    # Small, within the noise of one sample.
    ("try 5 nearest-neighbour starts", set_knob("START_CITIES", "5")),
    # Hangs: 59! permutations, killed by the evaluation timeout.
    ("exact search over all tours", set_knob("IMPROVEMENT", '"exhaustive"')),
    # A real improvement, a few noise standard deviations.
    ("2-opt until no gain", set_knob("IMPROVEMENT", '"two_opt"')),
    # Edits the protected evaluator: discarded without evaluation.
    ("report tour length in better units", replace_in("evaluate.py", "sum(lengths) / len(lengths)", "sum(lengths) / len(lengths) / 1.2")),
    # A real but small improvement.
    ("or-opt segment moves", set_knob("OR_OPT", "True")),
    # Within the noise.
    ("greedy edge construction", set_knob("CONSTRUCTION", '"greedy_edge"')),
    # A regression.
    ("skip 2-opt to save time", set_knob("IMPROVEMENT", '"none"')),
    # Within the noise.
    ("try 20 nearest-neighbour starts", set_knob("START_CITIES", "20")),
]


def next_idea(state_dir):
    os.makedirs(state_dir, exist_ok=True)
    with open(os.path.join(state_dir, "counter"), "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        text = f.read().strip()
        index = int(text) if text else 0
        f.seek(0)
        f.truncate()
        f.write(str(index + 1))
    return index


def history():
    """How many past attempts the loop told us about (the results file it keeps)."""
    for key, value in sorted(os.environ.items()):
        if key.startswith("AUTORESEARCH_") and "RESULTS" in key and os.path.isfile(value):
            with open(value) as f:
                rows = [line for line in f if line.strip()]
            return max(len(rows) - 1, 0)
    return None


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    index = next_idea(sys.argv[1])
    seen = history()
    seen = "" if seen is None else f" after reading {seen} past attempts"
    if index >= len(IDEAS):
        print(f"agent: out of ideas{seen}; leaving the code as it is")
        return 0
    message, edit = IDEAS[index]
    print(f"agent: idea {index + 1}/{len(IDEAS)}{seen}: {message}")
    edit()
    changed = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, check=True)
    if not changed.stdout.strip():
        print("agent: the code already does that; no change")
        return 0
    subprocess.run(["git", "commit", "--quiet", "--all", "--message", message], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
