"""The end-of-training experiment: which options steady the last epochs of the 4,938-parameter net.

A two-level fractional factorial design, 2^(7-4) (resolution III: 8 rows, every main effect
estimated from all 8, aliased with two-factor interactions), each row run on 3 seeds through
this project's own sweeper (grid over the rows, ``hydra.sweeper.repeats``), so every level of
every factor is measured on 12 runs over 3 seeds. The rows are config files,
``conf/design/eot_<row>.yaml``, written from ``DESIGN`` below (``--write-rows``; a test checks
the files match it); ``conf/search/end_of_training.yaml`` is the sweep. The fold-over
(``--foldover``: rows 9-16, every sign flipped) makes the pair resolution IV: main effects free
of two-factor interactions.

    python benchmarks/end_of_training.py --write-rows
    MNIST_SWEEP_STORAGE=sqlite:///eot.db mnist-train -m +search=end_of_training
    python benchmarks/end_of_training.py --storage sqlite:///eot.db      # the effects table

Each effect is mean(high) - mean(low) of the objective (min of the last 3 epochs' test accuracy)
over every finished run; its seed spread is the same contrast taken within each seed (the rows
run on that seed), reported as the per-seed values; its standard error comes from the
replicate scatter (runs of the same row on different seeds).
"""

import argparse
import itertools
import math
import statistics
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parent.parent
ROWS_DIR = REPO / "conf" / "design"

# factor -> (what it is, low, high), each level as the YAML it writes. Low is the seeds_small
# trial's own procedure (conf/experiment/seeds_small.yaml); high is the option under test.
FACTORS: Dict[str, Tuple[str, Dict[str, object], Dict[str, object]]] = {
    "A": ("channel dropout", {"model.dropout.kind": "element"}, {"model.dropout.kind": "channel"}),
    "B": ("weight average (0.999, warmed up)", {"trainer.ema": 0, "trainer.ema_warmup": False},
          {"trainer.ema": 0.999, "trainer.ema_warmup": True}),
    "C": ("batch 32", {"trainer.batch_size": 128}, {"trainer.batch_size": 32}),
    "D": ("strong augmentation", {"data/augment": "mild"}, {"data/augment": "strong"}),
    "E": ("BatchNorm statistics recomputed (100 clean batches)", {"trainer.bn_recompute": 0},
          {"trainer.bn_recompute": 100}),
    "F": ("label smoothing 0.1", {"trainer.label_smoothing": 0.0}, {"trainer.label_smoothing": 0.1}),
    "G": ("rate annealed to zero over the last 3 epochs", {"schedule.anneal_epochs": 0},
          {"schedule.anneal_epochs": 3}),
}
# generators of the fraction: D = AB, E = AC, F = BC, G = ABC
GENERATORS = {"D": "AB", "E": "AC", "F": "BC", "G": "ABC"}


def design(foldover: bool = False) -> List[Dict[str, int]]:
    """The rows as coded levels (-1 low, +1 high), in standard order of the base factors A, B, C."""
    rows = []
    for c, b, a in itertools.product((-1, 1), repeat=3):
        row = {"A": a, "B": b, "C": c}
        for factor, word in GENERATORS.items():
            row[factor] = math.prod(row[x] for x in word)
        rows.append({k: -v for k, v in row.items()} if foldover else row)
    return rows


def row_name(index: int) -> str:
    return f"eot_{index}"


def row_yaml(index: int, row: Dict[str, int]) -> str:
    groups, values = {}, {}
    for factor, level in row.items():
        for key, value in FACTORS[factor][1 if level < 0 else 2].items():
            (groups if "/" in key else values)[key] = value
    signs = " ".join(f"{f}{'+' if row[f] > 0 else '-'}" for f in FACTORS)
    lines = ["# @package _global_",
             f"# Row {index} of the end-of-training design (benchmarks/end_of_training.py writes it): {signs}",
             "defaults:"]
    lines += [f"  - override /{key}: {value}" for key, value in groups.items()]
    lines += ["  - _self_"]
    nested: Dict[str, object] = {}
    for key, value in values.items():
        *parents, leaf = key.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return "\n".join(lines) + "\n" + OmegaConf.to_yaml(nested)


def all_rows() -> Dict[str, Dict[str, int]]:
    rows = {row_name(i): r for i, r in enumerate(design(), 1)}
    rows.update({row_name(i): r for i, r in enumerate(design(foldover=True), 9)})
    return rows


def write_rows() -> None:
    ROWS_DIR.mkdir(exist_ok=True)
    for i, (name, row) in enumerate(all_rows().items(), 1):
        (ROWS_DIR / f"{name}.yaml").write_text(row_yaml(i, row))
        print(f"wrote conf/design/{name}.yaml")


RESPONSES = {  # what each run is judged by: name -> (what it is, from the repeat's stored attributes)
    "min_last_3": ("min of the last 3 epochs' test accuracy (the objective)", lambda a: a["min_last_k_test_acc"]),
    "best": ("best epoch's test accuracy", lambda a: a["best_test_acc"]),
    "last_3_range": ("max - min of the last 3 epochs (lower: steadier)", lambda a: max(a["curve"][-3:]) - min(a["curve"][-3:])),
    "minutes": ("minutes per run (one core, the machine shared)", lambda a: a["seconds"] / 60),
}
SEEDS = [21, 22, 23]  # conf/search/end_of_training.yaml's repeats.values: repeat k ran SEEDS[k]

Run = Tuple[str, int, Dict[str, float]]


def runs_of(storage: str, study_name: str) -> List[Run]:
    """(row, seed, responses) for every finished repeat of the study's trials."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=storage)
    runs = {}
    for trial in study.get_trials(deepcopy=False):
        row = trial.params.get("design")
        for seed, attrs in zip(SEEDS, trial.user_attrs.get("repeat_attrs") or []):
            if row is not None and attrs.get("curve"):
                runs[(row, seed)] = {name: float(fn(attrs)) for name, (_, fn) in RESPONSES.items()}
    return sorted((row, seed, values) for (row, seed), values in runs.items())


def effects(runs: Sequence[Run], response: str = "min_last_3") -> List[Dict[str, object]]:
    rows = all_rows()
    data = [(r, s, v[response]) for r, s, v in runs]
    by_row: Dict[str, List[float]] = {}
    for row, _, value in data:
        by_row.setdefault(row, []).append(value)
    # replicate scatter: pooled variance of a row's runs (other seeds) around the row's mean
    dof = sum(len(v) - 1 for v in by_row.values())
    pooled = (sum(sum((x - statistics.fmean(v)) ** 2 for x in v) for v in by_row.values()) / dof) if dof > 0 else None
    table = []
    for factor, (label, _, _) in FACTORS.items():
        high = [v for r, _, v in data if rows[r][factor] > 0]
        low = [v for r, _, v in data if rows[r][factor] < 0]
        if not high or not low:
            continue
        per_seed = {}
        for seed in sorted({s for _, s, _ in data}):
            h = [v for r, s, v in data if s == seed and rows[r][factor] > 0]
            lo = [v for r, s, v in data if s == seed and rows[r][factor] < 0]
            if h and lo:
                per_seed[seed] = statistics.fmean(h) - statistics.fmean(lo)
        se = math.sqrt(pooled * (1 / len(high) + 1 / len(low))) if pooled is not None else None
        table.append({"factor": factor, "label": label, "effect": statistics.fmean(high) - statistics.fmean(low),
                      "se": se, "n_high": len(high), "n_low": len(low), "per_seed": per_seed,
                      "aliases": aliases(factor)})
    return table


def aliases(factor: str) -> str:
    """The two-factor interactions a main effect is aliased with in the 8-row fraction."""
    words = {f: set(w) for f, w in GENERATORS.items()}
    words.update({f: {f} for f in "ABC"})
    found = []
    for x, y in itertools.combinations(FACTORS, 2):
        if factor not in (x, y) and words[x] ^ words[y] == words[factor]:
            found.append(x + y)
    return " ".join(found)


def markdown(table: List[Dict[str, object]], runs: Sequence[Run]) -> str:
    seeds = sorted({s for _, s, _ in runs})
    head = ("| factor | effect | ± se | " + " | ".join(f"seed {s}" for s in seeds)
            + " | runs high/low | aliased with |")
    lines = [head, "|" + "---|" * (5 + len(seeds))]
    for e in table:
        per = " | ".join(f"{e['per_seed'][s]:+.3f}" if s in e["per_seed"] else "" for s in seeds)
        se = f"{e['se']:.3f}" if e["se"] is not None else "-"
        lines.append(f"| {e['factor']}: {e['label']} | {e['effect']:+.3f} | {se} | {per} | "
                     f"{e['n_high']}/{e['n_low']} | {e['aliases']} |")
    return "\n".join(lines)


def runs_table(runs: Sequence[Run]) -> str:
    rows = all_rows()
    seeds = sorted({s for _, s, _ in runs})
    value = {(r, s): v for r, s, v in runs}
    lines = ["| row | " + " ".join(FACTORS) + " | " + " | ".join(f"seed {s}" for s in seeds)
             + " | mean | last-3 range (mean) | minutes (mean) |", "|" + "---|" * (5 + len(seeds))]
    for name, row in rows.items():
        got = [value.get((name, s)) for s in seeds]
        done = [v for v in got if v is not None]
        if not done:
            continue
        signs = " ".join("+" if row[f] > 0 else "-" for f in FACTORS)
        cells = " | ".join(f"{v['min_last_3']:.2f}" if v is not None else "" for v in got)
        mean = lambda key: statistics.fmean(v[key] for v in done)
        lines.append(f"| {name} | {signs} | {cells} | {mean('min_last_3'):.3f} | {mean('last_3_range'):.3f} | "
                     f"{mean('minutes'):.1f} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-rows", action="store_true", help="write conf/design/eot_*.yaml from DESIGN")
    parser.add_argument("--storage", help="the sweep database to read the effects from")
    parser.add_argument("--study", default="end_of_training")
    args = parser.parse_args(argv)
    if args.write_rows:
        write_rows()
        return 0
    if not args.storage:
        parser.error("give --write-rows or --storage")
    runs = runs_of(args.storage, args.study)
    if not runs:
        print(f"no finished runs in study {args.study!r}", file=sys.stderr)
        return 1
    print("Runs (min of the last 3 epochs' test accuracy per seed):", "", runs_table(runs), sep="\n")
    for response, (what, _) in RESPONSES.items():
        print("", f"Effects on the {what}: mean(high) - mean(low)", "", markdown(effects(runs, response), runs), sep="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
