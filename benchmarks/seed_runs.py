"""Re-run one config with several seeds and tabulate per-epoch test accuracy.

    python benchmarks/seed_runs.py --out docs/results/s4_8k --seeds 11 12 13 -- +experiment=s4_8k
    python benchmarks/seed_runs.py --out docs/results/s4_8k --table-only      # the table of runs already there
    python benchmarks/seed_runs.py --out docs/results/small_end_t21_shear10 --table-only --versus docs/results/small_end_t21
    python benchmarks/seed_runs.py --fuse 2 --out docs/results/NAME --seeds 11 12 13 14 -- +experiment=small_end_t21

Runs ``mnist-train <overrides> seed=S`` for each seed, ``--jobs`` at a time with one CPU thread
each (on a GPU machine: one after another unless told otherwise), or, with ``--fuse K``, K seeds
per run trained as one fused model (``mnist_arch.fused``: about 1.3 times the images per second
on this project's CPU; a fused seed is another draw of the same training, not a bit-for-bit copy
of its run alone), copies each run's
``metrics.json`` and composed config into ``--out`` as ``seedS.metrics.json`` and
``seedS.config.yaml``, then prints the Markdown tables README.md uses: test accuracy after every
epoch, and per seed the best (epoch), final, first epoch at the target, the minimum over the last
k epochs, seconds; then the mean and spread (max - min) over the seeds.
"""

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Tuple

from omegaconf import OmegaConf


def run_seeds(overrides: List[str], seeds: List[int], jobs: int, out: Path, fuse: int = 1) -> None:
    """Each seed's run into ``out``, ``jobs`` processes at a time; with ``fuse`` K > 1, K seeds per process,
    trained as one fused model (``python -m mnist_arch.fused``: about 1.3 times the images per second)."""
    out.mkdir(parents=True, exist_ok=True)
    threads = ["trainer.threads=1"] if jobs > 1 else []
    with tempfile.TemporaryDirectory() as tmp:
        pending = [seeds[i : i + fuse] for i in range(0, len(seeds), fuse)]
        running: Dict[Tuple[int, ...], subprocess.Popen] = {}
        while pending or running:
            while pending and len(running) < jobs:
                group = tuple(pending.pop(0))
                if len(group) > 1:
                    cmd = [sys.executable, "-m", "mnist_arch.fused", "--out", str(out), "--seeds", *map(str, group),
                           "--", *overrides, "trainer.progress=false", *threads]
                else:
                    cmd = [sys.executable, "-m", "mnist_arch.train", *overrides, f"seed={group[0]}",
                           "trainer.progress=false", f"hydra.run.dir={tmp}/seed{group[0]}", *threads]
                print("running:", " ".join(cmd[2:]), flush=True)
                running[group] = subprocess.Popen(cmd)
            group = next(iter(running))
            if running[group].wait() != 0:
                sys.exit(f"seed(s) {', '.join(map(str, group))} failed (exit {running[group].returncode})")
            del running[group]
            if len(group) == 1:
                run_dir = Path(tmp) / f"seed{group[0]}"
                shutil.copy(run_dir / "metrics.json", out / f"seed{group[0]}.metrics.json")
                shutil.copy(run_dir / ".hydra" / "config.yaml", out / f"seed{group[0]}.config.yaml")


def load_metrics(out: Path) -> Dict[int, dict]:
    """The ``seedS.metrics.json`` runs in ``out``, by seed, in seed order."""
    seed_of = lambda p: int(p.name[4:].split(".")[0])
    return {seed_of(p): json.loads(p.read_text()) for p in sorted(out.glob("seed*.metrics.json"), key=seed_of)}


def tables(out: Path) -> str:
    metrics = load_metrics(out)
    if not metrics:
        sys.exit(f"no seed*.metrics.json in {out}")
    epochs = max(len(m["history"]) for m in metrics.values())
    lines = ["| epoch | " + " | ".join(str(e) for e in range(1, epochs + 1)) + " |",
             "| --- |" + " --- |" * epochs]
    for seed, m in metrics.items():
        cells = []
        for h in m["history"]:
            text = f"{h['test_acc']:.2f}"
            cells.append(f"**{text}**" if h["epoch"] == m.get("epoch_reached_target") else text)
        lines.append(f"| seed {seed} | " + " | ".join(cells) + " |")
    config = out / f"seed{next(iter(metrics))}.config.yaml"
    k = OmegaConf.load(config).objective.last_k if config.exists() else 3
    lines += ["", f"| seed | best (epoch) | final | first epoch at 99.4% | min of last {k} epochs | seconds |",
              "| --- | --- | --- | --- | --- | --- |"]
    for seed, m in metrics.items():
        reached = m.get("epoch_reached_target")
        lines.append(f"| {seed} | {m['best_test_acc']:.2f} ({m['best_epoch']}) | {m['final_test_acc']:.2f} | "
                     f"{reached if reached is not None else 'never'} | {m['min_last_k_test_acc']:.2f} | "
                     f"{m['seconds']:,.0f} |")

    def stat(key: str) -> str:
        values = [m[key] for m in metrics.values()]
        return f"{statistics.mean(values):.2f} (spread {max(values) - min(values):.2f})"

    lines.append(f"| mean | {stat('best_test_acc')} | {stat('final_test_acc')} | | {stat('min_last_k_test_acc')} | |")
    params = {m["n_params"] for m in metrics.values()}
    held = sum(m["min_last_k_test_acc"] >= 99.4 for m in metrics.values())
    lines += ["", f"{', '.join(f'{p:,}' for p in sorted(params))} parameters; min of last {k} epochs at or above "
                  f"99.4% on {held} of {len(metrics)} seeds.", "", headline(metrics)]
    return "\n".join(lines)


def headline(metrics: Dict[int, dict]) -> str:
    """README's headline row: parameters, then the min of the last k epochs over the seeds: mean, sd, worst,
    the seeds, and the share at or above 99.4 and 99.6."""
    scores = [m["min_last_k_test_acc"] for m in metrics.values()]
    sd = statistics.stdev(scores) if len(scores) > 1 else float("nan")
    seeds = sorted(metrics)
    span = f"{seeds[0]}-{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) else ", ".join(map(str, seeds))
    share = lambda bar: f"{sum(s >= bar for s in scores)}/{len(scores)}"
    params = ", ".join(f"{p:,}" for p in sorted({m["n_params"] for m in metrics.values()}))
    return (f"| {params} | {statistics.mean(scores):.3f} | {sd:.3f} | {min(scores):.2f} | {span} | "
            f"{share(99.4)} | {share(99.6)} |")


def paired(base: Path, out: Path) -> str:
    """The runs in ``out`` against those of the same seeds in ``base`` (a lever's two levels, seed by seed): the
    min of the last k epochs of each, their difference, and the mean of each column with its standard error."""
    before, after = ({s: m["min_last_k_test_acc"] for s, m in load_metrics(folder).items()} for folder in (base, out))
    seeds = sorted(set(before) & set(after))
    if len(seeds) < 2:
        sys.exit(f"{base} and {out} share {len(seeds)} seed(s); a comparison needs 2 or more")
    columns = [[before[s] for s in seeds], [after[s] for s in seeds], [after[s] - before[s] for s in seeds]]
    se = lambda values: statistics.stdev(values) / len(values) ** 0.5
    lines = [f"| seed | {base.name} | {out.name} | difference |", "| ---: | ---: | ---: | ---: |"]
    lines += [f"| {s} | {b:.2f} | {a:.2f} | {a - b:+.2f} |" for s, b, a in zip(seeds, columns[0], columns[1])]
    lines.append(f"| mean of {len(seeds)} (se) | {statistics.mean(columns[0]):.3f} ({se(columns[0]):.3f}) | "
                 f"{statistics.mean(columns[1]):.3f} ({se(columns[1]):.3f}) | "
                 f"{statistics.mean(columns[2]):+.3f} ({se(columns[2]):.3f}) |")
    lines.append(f"| worst; >= 99.4 | {min(columns[0]):.2f}; {sum(v >= 99.4 for v in columns[0])}/{len(seeds)} | "
                 f"{min(columns[1]):.2f}; {sum(v >= 99.4 for v in columns[1])}/{len(seeds)} | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for seedS.metrics.json / seedS.config.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13])
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (each gets one CPU thread when > 1)")
    parser.add_argument("--fuse", type=int, default=1, help="seeds per run, trained as one fused model (mnist_arch.fused)")
    parser.add_argument("--table-only", action="store_true", help="tabulate the runs already in --out")
    parser.add_argument("--versus", type=Path, help="also compare with the same seeds' runs in this folder (a lever)")
    parser.add_argument("overrides", nargs="*", help="mnist-train overrides, after --")
    args = parser.parse_args()
    if not args.table_only:
        if not args.overrides:
            parser.error("give the mnist-train overrides after --, e.g. -- +experiment=s4_8k")
        run_seeds(args.overrides, args.seeds, args.jobs, args.out, args.fuse)
    print(tables(args.out))
    if args.versus is not None:
        print("\n" + paired(args.versus, args.out))


if __name__ == "__main__":
    main()
