"""A travelling-salesman tour heuristic: the code the demo's agent improves.

evaluate.py (read-only for the agent) calls solve() on random sets of cities
and prints the mean tour length: lower is better. The knobs below are what
the scripted agent changes, one idea per candidate commit.
"""

import math

# --- knobs --------------------------------------------------------------
CONSTRUCTION = "input_order"  # input_order | random | nearest_neighbour | greedy_edge
START_CITIES = 1  # nearest-neighbour tours tried from different starts
IMPROVEMENT = "none"  # none | two_opt_pass | two_opt | exhaustive
OR_OPT = False  # move runs of 1..3 cities to a better place
# -------------------------------------------------------------------------


def dist(a, b):
    return math.hypot(a[0] - b[0], a[1] - b[1])


def tour_length(cities, tour):
    return sum(dist(cities[tour[i - 1]], cities[tour[i]]) for i in range(len(tour)))


def nearest_neighbour(cities, start):
    unvisited = set(range(len(cities)))
    unvisited.remove(start)
    tour = [start]
    while unvisited:
        here = cities[tour[-1]]
        nxt = min(unvisited, key=lambda j: dist(here, cities[j]))
        unvisited.remove(nxt)
        tour.append(nxt)
    return tour


def greedy_edge(cities):
    """Adds the shortest edges that keep every degree <= 2 and close no cycle early."""
    n = len(cities)
    edges = sorted(
        (dist(cities[i], cities[j]), i, j) for i in range(n) for j in range(i + 1, n)
    )
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    degree = [0] * n
    adj = [[] for _ in range(n)]
    added = 0
    for _, i, j in edges:
        if degree[i] == 2 or degree[j] == 2 or find(i) == find(j):
            continue
        parent[find(i)] = find(j)
        degree[i] += 1
        degree[j] += 1
        adj[i].append(j)
        adj[j].append(i)
        added += 1
        if added == n - 1:
            break
    start = next(k for k in range(n) if degree[k] < 2)
    tour, prev = [start], None
    while len(tour) < n:
        nxt = next(k for k in adj[tour[-1]] if k != prev)
        prev = tour[-1]
        tour.append(nxt)
    return tour


def two_opt(cities, tour, passes):
    """Reverses segments while that shortens the tour, at most `passes` sweeps."""
    n = len(tour)
    for _ in range(passes):
        improved = False
        for i in range(n - 1):
            a, b = cities[tour[i]], cities[tour[i + 1]]
            for j in range(i + 2, n if i > 0 else n - 1):
                c, d = cities[tour[j]], cities[tour[(j + 1) % n]]
                delta = dist(a, c) + dist(b, d) - dist(a, b) - dist(c, d)
                if delta < -1e-9:
                    tour[i + 1 : j + 1] = reversed(tour[i + 1 : j + 1])
                    b = cities[tour[i + 1]]
                    improved = True
        if not improved:
            break
    return tour


def or_opt(cities, tour):
    """Moves runs of 1..3 consecutive cities to the cheapest other edge."""
    improved = True
    while improved:
        improved = False
        n = len(tour)
        for size in (1, 2, 3):
            for i in range(n - size):
                seg = tour[i : i + size]
                prev, nxt = tour[i - 1], tour[(i + size) % n]
                gain = (
                    dist(cities[prev], cities[seg[0]])
                    + dist(cities[seg[-1]], cities[nxt])
                    - dist(cities[prev], cities[nxt])
                )
                rest = tour[:i] + tour[i + size :]
                best, where = 1e-9, None
                for k in range(len(rest)):
                    p, q = cities[rest[k - 1]], cities[rest[k]]
                    cost = (
                        dist(p, cities[seg[0]])
                        + dist(cities[seg[-1]], q)
                        - dist(p, q)
                    )
                    if gain - cost > best:
                        best, where = gain - cost, k
                if where is not None:
                    tour = rest[:where] + seg + rest[where:]
                    improved = True
                    break
            if improved:
                break
    return tour


def exhaustive(cities):
    """The optimal tour by trying every permutation: fine for 8 cities, not for 60."""
    from itertools import permutations

    n = len(cities)
    best = None
    for rest in permutations(range(1, n)):
        tour = [0, *rest]
        if best is None or tour_length(cities, tour) < tour_length(cities, best):
            best = tour
    return best


def solve(cities, rng):
    """A tour: a permutation of range(len(cities)). `rng` is a seeded random.Random."""
    n = len(cities)
    if IMPROVEMENT == "exhaustive":
        return exhaustive(cities)
    if CONSTRUCTION == "nearest_neighbour":
        starts = rng.sample(range(n), min(START_CITIES, n))
        tours = [nearest_neighbour(cities, s) for s in starts]
        tour = min(tours, key=lambda t: tour_length(cities, t))
    elif CONSTRUCTION == "greedy_edge":
        tour = greedy_edge(cities)
    elif CONSTRUCTION == "random":
        tour = list(range(n))
        rng.shuffle(tour)
    else:
        tour = list(range(n))
    if IMPROVEMENT == "two_opt_pass":
        tour = two_opt(cities, tour, passes=1)
    elif IMPROVEMENT == "two_opt":
        tour = two_opt(cities, tour, passes=50)
    if OR_OPT:
        tour = or_opt(cities, tour)
    return tour
