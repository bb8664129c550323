"""``sweep-results``: read a sweep database (never write to it) and show what the sweep found.

Works on any study of any Hydra app; the columns are what its trials carry (objectives by name, the
numbers the jobs returned, the budget measure, steps, hyperparameters).

    sweep-results                                   # the studies in the default database
    sweep-results my_app                            # summary and the trials ranked by the objective
    sweep-results my_app --top 10 --state complete,pruned --max-budget 10000 --min val_acc=0.9
    sweep-results my_app --format markdown|csv|json # csv and json carry every hyperparameter
    sweep-results my_app --sort lr --max loss=0.5   # any column; filters on any numeric column
    sweep-results my_app --pareto                   # non-dominated trials: objectives, or objective vs budget
    sweep-results my_app --plots docs/my_app        # PNG figures
    sweep-results my_app --export best              # <config dir>/experiment/best.yaml from the best trial
    sweep-results --storage postgresql://user@host/db my_app
"""

import argparse
import csv
import io
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from .config import DEFAULT_STORAGE, LEGACY_STORAGE_ENV, STORAGE_ENV, storage_from_env
from .errors import fail
from .storage import StorageError, open_storage_readonly
from .table import (
    ACC_COLUMNS, KINDS, METRIC_COLUMNS, SIZE, TableError, bounded, budget_column, column_named, filter_rows, objective_columns, pareto_front, sort_rows, summary,
    trial_rows,
)

PROG = "sweep-results"  # also installed as mnist-results, the name this repo's docs used first
MNIST_PROG = "mnist-results"  # the same command with mnist_arch's accuracy shortcuts (--acc, --min-acc)
MNIST_EPILOG = """mnist-results is sweep-results with mnist_arch's shortcuts:

    mnist-results arch_s4 --min-acc 99.3 --max-params 10000   # = --min best_acc=99.3 --max-budget 10000
    mnist-results arch_s4 --pareto --acc min_last_k           # accuracy (worst of the last k) vs parameters
"""


class ResultsError(Exception):
    """A user-caused problem: one line, non-zero exit."""


def load_study(storage, name: str):
    import optuna

    names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    if name not in names:
        raise ResultsError(f"no study {name!r} in this database; studies: {', '.join(names) or 'none'}")
    return optuna.load_study(study_name=name, storage=storage)


# ------------------------------------------------------------------ formats


def _cell(key: str, v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (list, tuple)):  # a repeated trial's values (one list per repeat with several objectives)
        return "[" + ", ".join(_cell(key, x) for x in v) + "]"
    if key == SIZE and isinstance(v, int):
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
        return buf.getvalue().rstrip("\n")  # print adds the last line's end
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
        f"{_hours(s['saved_by_rejecting_seconds'])}"
        + (f", by racing: {_hours(s['saved_by_racing_seconds'])}" if s.get("repeats", 1) > 1 else "")
        + " (estimated from the median full trial)",
    ]
    if s.get("repeats", 1) > 1:
        lines.insert(1, f"each trial: {s['repeats']} repeats; columns aggregate them as the objective does, "
                        "'held' asks it of every repeat")
    if "reached_target_under_budget" in s:
        lines.append(f"trials that reached the target within the budget: {s['reached_target_under_budget']}; "
                     f"held it over the last k epochs (min_last_k): {s['held_target_under_budget']}")
        if s["smallest_that_held"]:
            h = s["smallest_that_held"]
            lines.append(f"smallest that held it: trial {h['trial']}, {h['params']:,} parameters "
                         f"(min_last_k {h['min_last_k']:.2f})")
    if s["best"]:
        b = s["best"]
        size = f" with {b['params']:,} parameters" if b["params"] is not None else ""
        lines.append(f"best: trial {b['trial']}, {b['value']:.4g}{size}: {b['hyperparameters']}")
    return "\n".join(lines)


def list_studies(storage) -> str:
    import optuna

    rows = []
    for s in optuna.get_all_study_summaries(storage, include_best_trial=True):
        best = s.best_trial.values if s.best_trial is not None else None
        rows.append({"study": s.study_name, "trials": s.n_trials,
                     "direction": "/".join(d.name.lower() for d in s.directions),
                     "best": best[0] if best and len(best) == 1 else best})
    return format_rows(rows, "text") if rows else "no studies in this database"


# ------------------------------------------------------------------ the command


def invoked_as() -> str:
    name = Path(sys.argv[0]).name
    return name if name in (PROG, MNIST_PROG) else PROG


def column_bound(text: str) -> Any:
    """``COLUMN=VALUE`` of --min and --max: (column, number)."""
    column, sep, value = text.partition("=")
    try:
        if not sep or not column:
            raise ValueError
        return column.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give COLUMN=NUMBER, e.g. loss=0.5") from None


def parse_args(argv: Optional[Sequence[str]], prog: Optional[str] = None) -> argparse.Namespace:
    """The command line; ``prog`` (default: the name it was invoked by) adds mnist_arch's shortcuts for mnist-results."""
    prog = prog or invoked_as()
    mnist = prog == MNIST_PROG
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__ + (MNIST_EPILOG if mnist else ""))
    p.add_argument("study", nargs="?", help="study name; without it, the studies in the database are listed")
    p.add_argument("--storage", default=storage_from_env(),
                   help=f"Optuna storage URL (default: ${STORAGE_ENV}, else "
                        + (f"${LEGACY_STORAGE_ENV}, else " if mnist else "") + f"{DEFAULT_STORAGE}, as the sweeper)")
    p.add_argument("--top", type=int, help="only the first N rows")
    p.add_argument("--state", help=f"comma-separated states to show: {','.join(KINDS)}")
    p.add_argument(*(["--max-budget", "--max-params"] if mnist else ["--max-budget"]), dest="max_params", type=int,
                   metavar="N", help="only trials whose budget measure (hydra.sweeper.budget.name) is at most N")
    p.add_argument("--min", dest="min_columns", type=column_bound, action="append", default=[], metavar="COLUMN=VALUE",
                   help="only trials whose COLUMN (any numeric column) is at least VALUE; may be repeated")
    p.add_argument("--max", dest="max_columns", type=column_bound, action="append", default=[], metavar="COLUMN=VALUE",
                   help="only trials whose COLUMN is at most VALUE; may be repeated")
    if mnist:
        p.add_argument("--min-acc", type=float, help="only trials whose accuracy (see --acc) is at least this")
        p.add_argument("--acc", choices=ACC_COLUMNS, default=None,
                       help="the accuracy --pareto, --min-acc and the accuracy-vs-parameters plot use: best epoch, "
                            "final epoch, worst of the last k epochs (objective.last_k), or that on the validation "
                            "split (default: the one the study optimizes, else the best epoch)")
    p.add_argument("--format", choices=("text", "markdown", "csv", "json"), default="text")
    p.add_argument("--sort", metavar="COLUMN",
                   help="order rows by this column instead of the objective: objectives by their direction, the "
                        "budget measure low first, any other high first; trials without it go last")
    p.add_argument("--pareto", action="store_true",
                   help="only the non-dominated trials: on the study's objectives when it has several, else the "
                        "objective against the budget measure")
    p.add_argument("--plots", metavar="DIR", help="write PNG figures into DIR")
    p.add_argument("--export", metavar="NAME", help="write the best (or --trial) trial as <config dir>/experiment/NAME.yaml")
    p.add_argument("--trial", type=int, help="the trial --export writes (default: the best)")
    p.add_argument("--config-dir", help="--export: the app's config folder, for studies that did not record it")
    p.add_argument("--config-name", help="--export: the app's primary config, for studies that did not record it")
    p.add_argument("--app-module", help="--export: module registering the app's structured configs, if not recorded")
    argv = list(sys.argv[1:] if argv is None else argv)
    shortcut = next((a.split("=")[0] for a in argv if a.split("=")[0] in ("--min-acc", "--acc")), None)
    if shortcut and not mnist:
        p.error(f"{shortcut} is mnist-results' shortcut for mnist_arch's accuracies; here give the column: "
                "--min COLUMN=VALUE (e.g. --min min_last_k=99.4)")
    args = p.parse_args(argv)
    if not mnist:
        args.min_acc = args.acc = None
    return args


def pareto_axes(objectives: Dict[str, bool], budget: Optional[str], acc: Optional[str],
                rows: Sequence[Dict[str, Any]]) -> Dict[str, bool]:
    """What --pareto trades off (column -> higher is better): the objectives of a multi-objective study;
    else the objective against the budget measure, mnist_arch's accuracy column (``--acc``) standing for
    the objective where the trials carry it."""
    if len(objectives) > 1:
        return objectives
    if budget is None:
        raise TableError("--pareto needs two things to trade off: this study has one objective and no budget "
                         "measure (hydra.sweeper.budget)")
    if acc is not None:
        return {acc: True, budget: False}
    return {**objectives, budget: False}


def default_acc(study: Any) -> str:
    """mnist_arch's accuracy column for --pareto, --min-acc and the accuracy plot when --acc is not
    given: the one the study optimizes (``min_last_k`` for ``objective.metric=min_last_k_test_acc``),
    else the best epoch's."""
    names = list(study.metric_names or [])
    if not names:
        names = [t.user_attrs.get("objective_metric") for t in study.get_trials(deepcopy=False)
                 if t.user_attrs.get("objective_metric")][-1:]
    column = METRIC_COLUMNS.get(names[0]) if len(study.directions) == 1 and names else None
    return column if column in ACC_COLUMNS else "best_acc"


def run(args: argparse.Namespace) -> str:
    if args.top is not None and args.top < 1:
        raise ResultsError(f"--top {args.top}: give a number of rows, 1 or more")
    if args.trial is not None and not args.export:
        raise ResultsError("--trial picks the trial --export writes: give --export NAME too")
    try:
        storage = open_storage_readonly(args.storage)
    except StorageError as exc:
        raise ResultsError(str(exc)) from None
    if args.study is None:
        return list_studies(storage)
    study = load_study(storage, args.study)
    if args.export:
        from .export import ExportError, export_trial

        try:
            return export_trial(study, args.export, args.trial, args.config_dir, args.config_name, args.app_module)
        except ExportError as exc:
            raise ResultsError(str(exc)) from None
    states = None
    if args.state:
        states = [s.strip() for s in args.state.split(",")]
        bad = [s for s in states if s not in KINDS]
        if bad:
            raise ResultsError(f"--state {','.join(bad)} is not one of: {', '.join(KINDS)}")
    rows = trial_rows(study, all_params=args.format in ("csv", "json"))
    objectives = objective_columns(study)
    trials = study.get_trials(deepcopy=False)  # pragma: no mutate (only read: a copy or not)
    budget = budget_column(trials)
    acc = args.acc or default_acc(study)
    try:
        if args.sort:
            column = column_named(rows, args.sort)
            higher = objectives.get(column, column != budget)
            rows = sort_rows(rows, column, higher_first=higher)
        if args.pareto:
            carried = args.acc or (acc if rows and acc in rows[0] else None)
            rows = pareto_front(rows, axes=pareto_axes(objectives, budget, carried, rows))
        rows = filter_rows(rows, states, args.max_params, args.min_acc, None, acc, budget)
        for columns, at_least in ((args.min_columns, True), (args.max_columns, False)):
            for name, bound in columns:
                rows = bounded(rows, column_named(rows, name), bound, at_least)
        rows = rows[:args.top] if args.top is not None else rows
    except TableError as exc:
        raise ResultsError(str(exc)) from None
    out = []
    if args.plots:
        try:
            from .plots import write_plots
        except ImportError as exc:
            raise ResultsError(f"--plots needs matplotlib ({exc}): pip install matplotlib") from None

        target = Path(args.plots)
        if target.exists() and not target.is_dir():
            raise ResultsError(f"--plots {target}: a file is there; give a folder")
        try:
            written = write_plots(study, trial_rows(study), target, acc)
        except OSError as exc:
            raise ResultsError(f"--plots {target}: cannot write there ({exc.strerror or exc})") from None
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
    # A closed pipe (sweep-results ... | head -1) ends the command quietly, as it ends any Unix tool
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    args = parse_args(argv)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        print(run(args))
    except ResultsError as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        invoked = Path(sys.argv[0]).name
        fail(invoked if invoked in ("sweep-results", "mnist-results") else PROG, str(exc))


if __name__ == "__main__":
    main()
