"""``mnist-results``: read a sweep database (never write to it) and show what the sweep found.

    mnist-results                                   # the studies in the default database
    mnist-results arch_s4                           # summary and the trials ranked by the objective
    mnist-results arch_s4 --top 10 --state complete,pruned --max-params 10000 --min-acc 99.3
    mnist-results arch_s4 --format markdown|csv|json
    mnist-results arch_s4 --pareto                  # non-dominated trials: accuracy versus parameters
    mnist-results arch_s4 --plots docs/arch_s4      # PNG figures
    mnist-results arch_s4 --export best_s4          # conf/experiment/best_s4.yaml from the best trial
    mnist-results --storage postgresql://user@host/db arch_s4
"""

import argparse
import csv
import io
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from .config import DEFAULT_STORAGE, STORAGE_ENV
from .optuna_sweeper import trial_kind
from .storage import JOURNAL_PREFIX, local_file, masked

TARGET_ACC = 99.4  # the exercise's target, for trials that do not store objective.target_acc

KINDS = ("complete", "pruned", "rejected", "failed", "running", "waiting")
SWEEPER_OVERRIDE_KEYS = ("trainer.callbacks.optuna_trial", "trainer.threads")  # added by the sweeper per job


class ResultsError(Exception):
    """A user-caused problem: one line, non-zero exit."""


# ------------------------------------------------------------------ reading the database


def open_storage_readonly(url: str) -> optuna.storages.BaseStorage:
    """The storage behind ``url``, opened without creating or upgrading anything."""
    path = local_file(url)
    if path is not None and not path.is_file():
        raise ResultsError(f"no sweep database at {path} ({masked(url)}); run a sweep first or pass --storage")
    if url.startswith(JOURNAL_PREFIX):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        try:
            return JournalStorage(JournalFileBackend(str(path)))
        except Exception as exc:
            raise ResultsError(f"{path} is not a readable Optuna journal: {' '.join(str(exc).split())[:200]}") from None
    shown = masked(url)
    if path is not None:  # read-only: this command never writes to the database
        with open(path, "rb") as f:
            if f.read(16) != b"SQLite format 3\x00":
                raise ResultsError(f"{path} is not a readable SQLite database (corrupted, or not a sweep database)")
        url = f"sqlite:///file:{path}?mode=ro&uri=true"
    try:
        return optuna.storages.RDBStorage(url, skip_table_creation=True)
    except Exception as exc:
        text = " ".join(str(exc).split())
        if "optuna storage upgrade" in text or "no longer compatible" in text or "not supported" in text:
            raise ResultsError(
                f"{shown} was written by an Optuna version this one cannot read ({optuna.__version__}): "
                f"upgrade it with `optuna storage upgrade --storage URL` (back it up first), or install the Optuna "
                "version that wrote it"
            ) from None
        if "file is not a database" in text or "malformed" in text:
            raise ResultsError(f"{path} is not a readable SQLite database (corrupted?): {text[:200]}") from None
        raise ResultsError(f"cannot open {shown}: {text[:300]}") from None


def load_study(storage: optuna.storages.BaseStorage, name: str) -> optuna.Study:
    names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    if name not in names:
        raise ResultsError(f"no study {name!r} in this database; studies: {', '.join(names) or 'none'}")
    return optuna.load_study(study_name=name, storage=storage)


# ------------------------------------------------------------------ rows and summary


def short_names(keys: Sequence[str]) -> Dict[str, str]:
    """``model.widths.multiplier`` -> ``multiplier``; longer suffixes where the short ones collide."""
    parts = {k: k.replace("/", ".").split(".") for k in keys}
    names = {}
    for k, p in parts.items():
        for n in range(1, len(p) + 1):
            candidate = ".".join(p[-n:])
            if all(".".join(q[-n:]) != candidate for other, q in parts.items() if other != k):
                names[k] = candidate
                break
        else:
            names[k] = k
    return names


def varying_params(trials: Sequence[FrozenTrial]) -> List[str]:
    keys = sorted({k for t in trials for k in t.params})
    return [k for k in keys if len({json.dumps(t.params.get(k), sort_keys=True) for t in trials}) > 1]


def rank_key(study: optuna.Study):
    sign = -1 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1

    def key(t: FrozenTrial):
        kind = trial_kind(t)
        if kind == "complete":
            return (0, sign * t.values[0], t.number)
        acc = t.user_attrs.get("best_test_acc")
        return (1 + KINDS.index(kind), -(acc if acc is not None else -1), t.number)

    return key


def trial_rows(study: optuna.Study) -> List[Dict[str, Any]]:
    """One row per trial, ranked by the objective (complete first, then pruned, rejected, failed)."""
    trials = sorted(study.get_trials(deepcopy=False), key=rank_key(study))
    varying = varying_params(trials)
    names = short_names(varying)
    with_val = any("min_last_k_val_acc" in t.user_attrs for t in trials)  # trained with a validation split
    rows = []
    rank = 0
    for t in trials:
        a = t.user_attrs
        kind = trial_kind(t)
        if kind in ("complete", "pruned"):
            rank += 1
        rows.append({
            "rank": rank if kind in ("complete", "pruned") else None,
            "trial": t.number,
            "state": kind,
            "objective": t.values[0] if t.values and len(t.values) == 1 else (t.values or None),
            "best_acc": a.get("best_test_acc"),
            "final_acc": a.get("final_test_acc"),
            "min_last_k": a.get("min_last_k_test_acc"),
            **({"val_min_last_k": a.get("min_last_k_val_acc")} if with_val else {}),
            "best_epoch": a.get("best_epoch"),
            "reached_target": a.get("epoch_reached_target"),
            "params": a.get("n_params"),
            **{names[k]: t.params.get(k) for k in varying},
            "epochs": a.get("epochs_run"),
            "seconds": round(a["seconds"], 1) if isinstance(a.get("seconds"), (int, float)) else None,
            "note": a.get("reason") or a.get("error") or a.get("stop_reason"),
        })
    return rows


def summary(study: optuna.Study) -> Dict[str, Any]:
    trials = study.get_trials(deepcopy=False)
    counts = {k: 0 for k in KINDS}
    for t in trials:
        counts[trial_kind(t)] += 1
    trained = [t for t in trials if t.user_attrs.get("launched") and t.state.is_finished()]
    complete = [t for t in trials if t.state == TrialState.COMPLETE and "seconds" in t.user_attrs]
    full_epochs = max((t.user_attrs.get("epochs_run", 0) for t in complete), default=0)
    full = [t.user_attrs["seconds"] for t in complete if t.user_attrs.get("epochs_run") == full_epochs]
    full_cost = statistics.median(full) if full else None
    saved_pruning = saved_rejecting = None
    if full_cost is not None and full_epochs:
        saved_pruning = sum(
            full_cost * (1 - t.user_attrs.get("epochs_run", full_epochs) / full_epochs)
            for t in trials if trial_kind(t) == "pruned"
        )
        saved_rejecting = counts["rejected"] * full_cost
    reached = [
        t for t in complete
        if t.user_attrs.get("epoch_reached_target") is not None
        and (t.user_attrs.get("max_params") is None or t.user_attrs["n_params"] <= t.user_attrs["max_params"])
    ]
    # The strict reading: the worst of the last k epochs at or above the target (99.4 unless the trial says).
    held = [t for t in reached if t.user_attrs.get("min_last_k_test_acc", -1) >= t.user_attrs.get("target_acc", TARGET_ACC)]
    # the fewest parameters; of equally small trials, the one that held with the most margin
    smallest = min(held, key=lambda t: (t.user_attrs["n_params"], -t.user_attrs["min_last_k_test_acc"], t.number),
                   default=None)
    best = None
    if len(study.directions) == 1 and any(t.state == TrialState.COMPLETE for t in trials):
        b = study.best_trial
        best = {"trial": b.number, "value": b.value, "params": b.user_attrs.get("n_params"), "hyperparameters": b.params}
    return {
        "study": study.study_name,
        "metric": (study.metric_names or ["objective"]),
        "direction": [d.name.lower() for d in study.directions],
        "trials": counts,
        "training_seconds": sum(t.user_attrs.get("seconds", 0.0) for t in trained),
        "full_trial_seconds": full_cost,
        "saved_by_pruning_seconds": saved_pruning,
        "saved_by_rejecting_seconds": saved_rejecting,
        "reached_target_under_budget": len(reached),
        "held_target_under_budget": len(held),
        "smallest_that_held": None if smallest is None else {
            "trial": smallest.number, "params": smallest.user_attrs["n_params"],
            "min_last_k": smallest.user_attrs["min_last_k_test_acc"]},
        "best": best,
    }


# Accuracy columns of the table a user may rank the accuracy-vs-parameters view by (--acc).
ACC_COLUMNS = {
    "best_acc": "best test accuracy (%)",
    "final_acc": "final test accuracy (%)",
    "min_last_k": "test accuracy, worst of the last k epochs (%)",
    "val_min_last_k": "validation accuracy, worst of the last k epochs (%)",
}


def pareto_front(rows: Sequence[Dict[str, Any]], acc: str = "best_acc") -> List[Dict[str, Any]]:
    """Trained trials that no other beats on both accuracy (column ``acc``, higher) and parameters (fewer)."""
    pts = [r for r in rows if r["state"] == "complete" and r.get(acc) is not None and r["params"] is not None]
    front = [
        r for r in pts
        if not any(o[acc] >= r[acc] and o["params"] <= r["params"]
                   and (o[acc] > r[acc] or o["params"] < r["params"]) for o in pts)
    ]
    return sorted(front, key=lambda r: r["params"])


def sort_rows(rows: Sequence[Dict[str, Any]], column: str) -> List[Dict[str, Any]]:
    """Rows ordered by ``column``: accuracies descending, params ascending; rows without it last, in order."""
    sign = 1 if column == "params" else -1
    return sorted(rows, key=lambda r: (r.get(column) is None, sign * (r.get(column) or 0)))


def filter_rows(rows, states=None, max_params=None, min_acc=None, top=None, acc="best_acc"):
    out = [r for r in rows if states is None or r["state"] in states]
    if max_params is not None:
        out = [r for r in out if r["params"] is not None and r["params"] <= max_params]
    if min_acc is not None:
        out = [r for r in out if r.get(acc) is not None and r[acc] >= min_acc]
    return out[:top] if top is not None else out


# ------------------------------------------------------------------ formats


def _cell(key: str, v: Any) -> str:
    if v is None:
        return ""
    if key == "params" and isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.6g}" if abs(v) < 1 else f"{v:.2f}"
    return str(v)


def format_rows(rows: Sequence[Dict[str, Any]], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(list(rows), indent=2)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
        return buf.getvalue()
    cells = [[_cell(k, r.get(k)) for k in columns] for r in rows]
    if fmt == "markdown":
        lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
        return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells])
    widths = [max([len(col)] + [len(c[i]) for c in cells]) for i, col in enumerate(columns)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()
    return "\n".join([line(columns), line(["-" * w for w in widths])] + [line(c) for c in cells])


def _hours(seconds: Optional[float]) -> str:
    if seconds is None:
        return "unknown (no full trial finished)"
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def format_summary(s: Dict[str, Any]) -> str:
    counts = ", ".join(f"{n} {k}" for k, n in s["trials"].items() if n)
    several = len(s["direction"]) > 1  # Optuna prunes single-objective studies only
    pruning = "none (several objectives, never pruned)" if several else _hours(s["saved_by_pruning_seconds"])
    lines = [
        f"study {s['study']}: {'/'.join(s['direction'])} {'/'.join(s['metric'])}; trials: {counts or 'none'}",
        f"training time: {_hours(s['training_seconds'])}; a full trial: {_hours(s['full_trial_seconds'])}; "
        f"saved by pruning: {pruning}, by rejecting over-budget trials: "
        f"{_hours(s['saved_by_rejecting_seconds'])} (estimated from the median full trial)",
        f"trials that reached the target within the budget: {s['reached_target_under_budget']}; "
        f"held it over the last k epochs (min_last_k): {s['held_target_under_budget']}",
    ]
    if s["smallest_that_held"]:
        h = s["smallest_that_held"]
        lines.append(f"smallest that held it: trial {h['trial']}, {h['params']:,} parameters (min_last_k {h['min_last_k']:.2f})")
    if s["best"]:
        b = s["best"]
        size = f" with {b['params']:,} parameters" if b["params"] is not None else ""
        lines.append(f"best: trial {b['trial']}, {b['value']:.4g}{size}: {b['hyperparameters']}")
    return "\n".join(lines)


def list_studies(storage) -> str:
    rows = []
    for s in optuna.get_all_study_summaries(storage, include_best_trial=True):
        best = s.best_trial.values if s.best_trial is not None else None
        rows.append({"study": s.study_name, "trials": s.n_trials,
                     "direction": "/".join(d.name.lower() for d in s.directions),
                     "best": best[0] if best and len(best) == 1 else best})
    return format_rows(rows, "text") if rows else "no studies in this database"


# ------------------------------------------------------------------ the command


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="mnist-results", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("study", nargs="?", help="study name; without it, the studies in the database are listed")
    p.add_argument("--storage", default=os.environ.get(STORAGE_ENV, DEFAULT_STORAGE),
                   help=f"Optuna storage URL (default: ${STORAGE_ENV}, else {DEFAULT_STORAGE}, as the sweeper)")
    p.add_argument("--top", type=int, help="only the first N rows")
    p.add_argument("--state", help=f"comma-separated states to show: {','.join(KINDS)}")
    p.add_argument("--max-params", type=int, help="only trials with at most this many parameters")
    p.add_argument("--min-acc", type=float, help="only trials whose accuracy (see --acc) is at least this")
    p.add_argument("--acc", choices=ACC_COLUMNS, default="best_acc",
                   help="the accuracy --pareto, --min-acc and the accuracy-vs-parameters plot use: best epoch, "
                        "final epoch, worst of the last k epochs (objective.last_k), or that on the validation split")
    p.add_argument("--format", choices=("text", "markdown", "csv", "json"), default="text")
    p.add_argument("--sort", choices=(*ACC_COLUMNS, "params"),
                   help="order rows by this column (accuracies high first, params low first) instead of the "
                        "objective; trials without it go last. E.g. --sort val_min_last_k: what selecting on "
                        "the validation split would pick")
    p.add_argument("--pareto", action="store_true", help="only the non-dominated trials (accuracy vs parameters)")
    p.add_argument("--plots", metavar="DIR", help="write PNG figures into DIR")
    p.add_argument("--export", metavar="NAME", help="write the best (or --trial) trial as conf/experiment/NAME.yaml")
    p.add_argument("--trial", type=int, help="the trial --export writes (default: the best)")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> str:
    storage = open_storage_readonly(args.storage)
    if args.study is None:
        return list_studies(storage)
    study = load_study(storage, args.study)
    if args.export:
        from .export import ExportError, export_trial

        try:
            return export_trial(study, args.export, args.trial)
        except ExportError as exc:
            raise ResultsError(str(exc)) from None
    rows = trial_rows(study)
    states = None
    if args.state:
        states = [s.strip() for s in args.state.split(",")]
        bad = [s for s in states if s not in KINDS]
        if bad:
            raise ResultsError(f"--state {','.join(bad)} is not one of: {', '.join(KINDS)}")
    if args.sort:
        rows = sort_rows(rows, args.sort)
    if args.pareto:
        rows = pareto_front(rows, args.acc)
    rows = filter_rows(rows, states, args.max_params, args.min_acc, args.top, args.acc)
    out = []
    if args.plots:
        from .plots import write_plots

        written = write_plots(study, trial_rows(study), Path(args.plots), args.acc)
        out.append("wrote " + ", ".join(str(p) for p in written))
    if args.format == "text":
        out.append(format_summary(summary(study)))
        out.append("")
    elif args.format == "markdown":
        out.append(format_summary(summary(study)).replace("\n", "  \n"))
        out.append("")
    out.append(format_rows(rows, args.format) if rows else ("[]" if args.format == "json" else "no trials match"))
    return "\n".join(out)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        print(run(args))
    except ResultsError as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        sys.exit(f"mnist-results: {exc}")


if __name__ == "__main__":
    main()
