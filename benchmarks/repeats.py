"""How often does a search pick the truly best configuration under seed noise, and at what compute?

    python benchmarks/repeats.py                       # the defaults below, 2,000 simulated searches
    python benchmarks/repeats.py --noise 0.035 --configs 20 --searches 5000

A toy objective with known seed noise: configuration i has a true score mu_i (its expected
value on a seed), and every run of it gives mu_i + noise drawn per (configuration, seed). The
candidates come in a random order, as a sampler would propose them. Compared:

- single seed: each configuration run once; the best single run wins (what a plain sweep does);
- repeats: each run on n seeds, scored by the aggregate (``sweeper.repeats``' own code);
- repeats + racing: the same, each candidate stopped by ``Repeats.raced_out``, the rule the
  sweeper applies between repeats (exact for ``min``: one seed below the best decides).

"Picked the best" means the winner is the configuration with the highest true score. Compute is
counted in runs (one run = one training of one seed). The defaults are this project's small-end
numbers: candidates within 0.15 points of each other, one seed moving the score by a standard
deviation of 0.035 points (docs/frontier: up to 0.09 between three seeds at about 5k parameters).
"""

import argparse
import random
import statistics
import sys
from pathlib import Path
from typing import Dict, List

from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sweeper.repeats import Repeats  # noqa: E402  the sweeper's own aggregate and racing rule


def make_repeats(n: int, aggregate: str, race: bool, bound=None) -> Repeats:
    cfg = OmegaConf.create({"n": n, "key": "seed", "values": None, "aggregate": aggregate, "race": race, "bound": bound})
    config = OmegaConf.create({"seed": 1, "hydra": {"sweep": {"subdir": "${hydra.job.num}"}}})
    return Repeats.from_config(cfg, config, {}, ["x"], ["maximize"])


def draw(n_configs: int, n_seeds: int, noise: float, rng: random.Random):
    """One search's world: the order the candidates come in and every (candidate, seed) noise."""
    order = list(range(n_configs))
    rng.shuffle(order)
    return order, [[rng.gauss(0.0, noise) for _ in range(n_seeds)] for _ in range(n_configs)]


def search(mus: List[float], world, repeats: Repeats) -> Dict[str, float]:
    """One search over the candidates in the world's order; the winner's index and the runs spent."""
    order, noise = world
    best, best_value, runs = None, None, 0
    for i in order:
        values: List[List[float]] = []
        for k in range(repeats.n):
            if repeats.raced_out([v[0] for v in values], best_value, "maximize"):
                break
            values.append([mus[i] + noise[i][k]])
            runs += 1
        else:
            value = repeats.aggregated(values)[0]
            if best_value is None or value > best_value:
                best, best_value = i, value
    return {"winner": best, "runs": runs}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", type=int, default=20, help="candidates per search")
    parser.add_argument("--spread", type=float, default=0.15, help="true scores lie evenly in [99.30, 99.30 + spread]")
    parser.add_argument("--noise", type=float, default=0.035, help="standard deviation of one seed's effect")
    parser.add_argument("--n", type=int, default=3, help="repeats per trial")
    parser.add_argument("--searches", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    mus = [99.30 + args.spread * k / (args.configs - 1) for k in range(args.configs)]
    truth = max(range(len(mus)), key=mus.__getitem__)
    methods = {
        "single seed": make_repeats(1, "mean", False),
        f"{args.n} seeds, mean": make_repeats(args.n, "mean", False),
        f"{args.n} seeds, mean, raced (bound 100)": make_repeats(args.n, "mean", True, bound=100.0),
        f"{args.n} seeds, min": make_repeats(args.n, "min", False),
        f"{args.n} seeds, min, raced": make_repeats(args.n, "min", True),
    }
    print(f"{args.configs} candidates, true scores {mus[0]:.2f} to {mus[-1]:.2f}, seed noise sd {args.noise}, "
          f"{args.searches} searches each\n")
    print("| search | picks the truly best | picks one within 0.02 | runs per search | runs vs single seed |")
    print("|---|---:|---:|---:|---:|")
    rng = random.Random(args.seed)
    worlds = [draw(len(mus), args.n, args.noise, rng) for _ in range(args.searches)]  # the same for every method
    single_runs = None
    for name, repeats in methods.items():
        results = [search(mus, world, repeats) for world in worlds]
        exact = sum(r["winner"] == truth for r in results) / len(results)
        close = sum(mus[truth] - mus[r["winner"]] <= 0.02 + 1e-9 for r in results) / len(results)
        runs = statistics.fmean(r["runs"] for r in results)
        single_runs = single_runs or runs
        print(f"| {name} | {exact:.1%} | {close:.1%} | {runs:.1f} | {runs / single_runs:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
