"""Evaluates tsp.py: mean tour length over random city sets (lower is better).

Read-only for the agent (autoresearch.toml protects it), like karpathy's
prepare.py. Each sample draws its own cities, seeded by the sample index the
loop passes in the environment, so repeated samples differ: the noise the
noise-aware comparator has to see through. Prints `name: value` lines.
"""

import os
import random
import sys
import time

import tsp

INSTANCES = 4
CITIES = 60


def sample_index():
    for name in ("AUTORESEARCH_SAMPLE", "AUTORESEARCH_SAMPLE_INDEX"):
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return random.SystemRandom().randrange(1_000_000)


def cities(seed):
    rng = random.Random(seed)
    return [(rng.uniform(0, 1000), rng.uniform(0, 1000)) for _ in range(CITIES)]


def main():
    sample = sample_index()
    started = time.perf_counter()
    lengths = []
    for i in range(INSTANCES):
        points = cities(1_000_003 * sample + i)
        tour = tsp.solve(points, random.Random(7919 * sample + i))
        if sorted(tour) != list(range(CITIES)):
            print(f"invalid tour for instance {i}: not a permutation", file=sys.stderr)
            return 1
        lengths.append(tsp.tour_length(points, tour))
    print("---")
    print(f"tour_length: {sum(lengths) / len(lengths):.3f}")
    print(f"eval_seconds: {time.perf_counter() - started:.3f}")
    print(f"(sample {sample})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
