"""The results table of a study: one row per trial, ranked; filters, sorting, Pareto front, summary.

Works on any study. The columns an app's trials carry as user attributes are shown where
present: the accuracies, epochs and target of mnist_arch's trainer, the budget's measure
(``params`` for ``n_params``); a study whose trials carry none gets the objective, the
hyperparameters, the state and the note.

A trial with repeats (``hydra.sweeper.repeats``) shows its repeats' objective values
(``repeats``), and its metric columns aggregated over the repeats as its objective is; "held the
target" asks it of every repeat.
"""

import json
import statistics
from typing import Any, Dict, List, Optional, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from .repeats import (AGGREGATE_ATTR, AGGREGATES, CONTINUES_ATTR, RACED_OUT_ATTR, REPEAT_ATTRS_ATTR, REPEAT_SECONDS_ATTR, REPEATS_N_ATTR,
                      aggregate, stored_values)
from .trials import (BUDGET_MAX_ATTR, BUDGET_NAME_ATTR, ERROR_ATTR, LAUNCHED_ATTR, METRICS_ATTR, RETRY_OF_ATTR, attr,
                     trial_kind)

KINDS = ("complete", "pruned", "raced", "rejected", "failed", "running", "waiting")
# The table's order of kinds: trials that trained in full (a raced one finished at least one repeat's every
# step; its value is those repeats' aggregate) before those stopped part way (pruned: a step's report)
RANKED = ("complete", "raced", "pruned", "rejected", "failed", "running", "waiting")

# user attribute -> column, in the order shown, where any trial carries it
METRIC_COLUMNS = {
    "best_test_acc": "best_acc", "final_test_acc": "final_acc", "min_last_k_test_acc": "min_last_k",
    "min_last_k_val_acc": "val_min_last_k", "best_epoch": "best_epoch", "epoch_reached_target": "reached_target",
    "n_params": "params",
}
# Accuracy columns a user may rank the accuracy-vs-size view by (--acc).
ACC_COLUMNS = {
    "best_acc": "best test accuracy (%)",
    "final_acc": "final test accuracy (%)",
    "min_last_k": "test accuracy, worst of the last k epochs (%)",
    "val_min_last_k": "validation accuracy, worst of the last k epochs (%)",
}
SIZE = "params"
# columns every table may have besides the objectives, metrics and hyperparameters
FIXED_COLUMNS = ("rank", "trial", "state", "repeats", "epochs", "steps", "seconds", "note")


class TableError(ValueError):
    """A table that cannot be made from this study as asked (a missing column): one line."""


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


def params_of(t: FrozenTrial) -> Dict[str, Any]:
    """The trial's hyperparameters; a queued (WAITING) trial has none yet, only the ones it was enqueued with."""
    return t.params or (t.system_attrs.get("fixed_params") if t.state == TrialState.WAITING else None) or {}


def varying_params(trials: Sequence[FrozenTrial]) -> List[str]:
    keys = sorted({k for t in trials for k in params_of(t)})
    return [k for k in keys if len({json.dumps(params_of(t).get(k), sort_keys=True) for t in trials}) > 1]


def objective_names(study: optuna.Study) -> List[str]:
    """The objectives' column names: the study's metric names (``hydra.sweeper.objectives``), else
    ``objective`` for one and ``objective_0``, ``objective_1``, ... for several."""
    n = len(study.directions)
    names = list(study.metric_names or [])
    if len(names) == n and len(set(names)) == n:
        return names
    return ["objective"] if n == 1 else [f"objective_{i}" for i in range(n)]


def objective_columns(study: optuna.Study) -> Dict[str, bool]:
    """The row columns holding the objective values -> higher is better (maximize): each objective by its
    own name (``hydra.sweeper.objectives``; the short column name of a metric the table knows, as
    ``min_last_k`` for ``min_last_k_test_acc``), else ``objective`` or ``objective_0``, ``objective_1``, ..."""
    maximize = [d == optuna.study.StudyDirection.MAXIMIZE for d in study.directions]
    columns = [METRIC_COLUMNS.get(n, n) for n in objective_names(study)]
    if len(set(columns)) < len(columns):  # two names that shorten to one column: keep the names as given
        columns = objective_names(study)
    return dict(zip(columns, maximize))


def column_named(rows: Sequence[Dict[str, Any]], name: str) -> str:
    """The column a user names: its own name, or the metric it shows (``min_last_k_test_acc`` -> ``min_last_k``)."""
    if rows and name not in rows[0] and METRIC_COLUMNS.get(name) in rows[0]:
        return METRIC_COLUMNS[name]
    return name


def budget_column(trials: Sequence[FrozenTrial]) -> Optional[str]:
    """The column of the budget measure the trials were gated by (``params`` for ``n_params``), if any."""
    names = [t.user_attrs[BUDGET_NAME_ATTR] for t in trials if t.user_attrs.get(BUDGET_NAME_ATTR)]
    if not names:
        return SIZE if any("n_params" in t.user_attrs for t in trials) else None
    return METRIC_COLUMNS.get(names[-1], names[-1])


def shown_values(t: FrozenTrial) -> Optional[List[float]]:
    """The objective values the table shows for a trial.

    A complete trial's own. A raced trial's finished repeats, aggregated as the sweep aggregates
    them (Optuna stores a pruned trial's last per-step report as its value: for a raced trial that
    is a step of its first repeat, not what its repeats scored). A pruned trial's last per-step
    report, as Optuna keeps it.
    """
    if trial_kind(t) == "raced":
        so_far = stored_values(t.user_attrs)
        if so_far:
            return aggregate(t.user_attrs.get(AGGREGATE_ATTR, "mean"), so_far)
    return list(t.values) if t.values else None


def rank_key(study: optuna.Study):
    """Complete trials first, best objective first; then raced, pruned and each other kind (RANKED), each best
    shown objective first."""
    sign = -1 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1

    def key(t: FrozenTrial):
        kind = trial_kind(t)
        values = shown_values(t)
        first = sign * values[0] if values and values[0] is not None else float("inf")
        return (RANKED.index(kind), first, t.number)

    return key


def steps_run(t: FrozenTrial) -> Optional[int]:
    if t.user_attrs.get("epochs_run") is not None:
        return t.user_attrs["epochs_run"]
    return len(t.intermediate_values) or None


def _seconds(t: FrozenTrial) -> Optional[float]:
    """The trial's training time: its repeats' jobs together, else the job's own figure, else the sweeper's."""
    if t.user_attrs.get(REPEAT_SECONDS_ATTR):
        return float(sum(t.user_attrs[REPEAT_SECONDS_ATTR]))
    value = t.user_attrs.get("seconds", t.user_attrs.get("sweep_seconds"))
    return value if isinstance(value, (int, float)) else None


def metric_attrs(t: FrozenTrial) -> Dict[str, Any]:
    """The trial's user attributes, the numeric ones aggregated over its repeats as its objective is."""
    repeats = t.user_attrs.get(REPEAT_ATTRS_ATTR)
    if not repeats:
        return t.user_attrs
    fn = AGGREGATES[t.user_attrs.get(AGGREGATE_ATTR, "mean")]
    out = dict(t.user_attrs)
    for key in {k for r in repeats for k in r}:
        values = [r.get(key) for r in repeats]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            joined = fn(values)
            integral = all(isinstance(v, int) for v in values) and float(joined).is_integer()
            out[key] = int(joined) if integral else joined  # counts stay counts (epochs, parameters)
    return out


def worst_repeat(t: FrozenTrial, key: str) -> Optional[float]:
    """``key`` on the trial's worst repeat (its own value without repeats): what "on every seed" asks."""
    repeats = t.user_attrs.get(REPEAT_ATTRS_ATTR)
    values = [r.get(key) for r in repeats] if repeats else [t.user_attrs.get(key)]
    return min(values) if values and all(isinstance(v, (int, float)) for v in values) else None


def named_metrics(trials: Sequence[FrozenTrial], carried: set) -> List[str]:
    """The metrics the trials' jobs returned by name (``hydra.sweeper.metrics``), in their order, where some
    trial holds a number for it: columns of their own beside the objectives."""
    names = dict.fromkeys(n for t in trials for n in t.user_attrs.get(METRICS_ATTR) or ())
    return [n for n in names if n in carried and n not in METRIC_COLUMNS and n not in METRIC_COLUMNS.values()
            and n not in FIXED_COLUMNS and n != "epochs_run"]  # epochs_run: the epochs column


def trial_rows(study: optuna.Study, all_params: bool = False) -> List[Dict[str, Any]]:
    """One row per trial, ranked by the objective (complete first, then pruned, rejected, failed).

    Hyperparameters: those that vary, or every one with ``all_params`` (for csv and json).
    """
    trials = study.get_trials(deepcopy=False)  # pragma: no mutate (only read: a copy or not)
    trials = sorted(trials, key=rank_key(study))
    keys = sorted({k for t in trials for k in params_of(t)}) if all_params else varying_params(trials)
    names = short_names(keys) if not all_params else {k: k for k in keys}
    carried = {a for t in trials for a in metric_attrs(t)}
    metrics = {a: c for a, c in METRIC_COLUMNS.items() if a in carried}
    budget_names = {t.user_attrs[BUDGET_NAME_ATTR] for t in trials if t.user_attrs.get(BUDGET_NAME_ATTR)}
    metrics.update({n: n for n in sorted(budget_names) if n not in METRIC_COLUMNS})
    objectives, objective_attrs = list(objective_columns(study)), objective_names(study)
    metrics.update({n: n for n in named_metrics(trials, carried) if n not in metrics and n not in objective_attrs})
    with_repeats = any(t.user_attrs.get("repeat_values") for t in trials)
    with_steps = any(steps_run(t) for t in trials)
    with_seconds = any(_seconds(t) is not None for t in trials)
    reruns = {}  # a trial failed by a lost worker or an interrupt -> the trial queued to run its point again
    for t in trials:
        source = t.user_attrs.get(RETRY_OF_ATTR, t.user_attrs.get(CONTINUES_ATTR))
        if isinstance(source, int):
            reruns[source] = t.number
    rows, rank = [], 0
    for t in trials:
        a = metric_attrs(t)
        kind = trial_kind(t)
        if kind in ("complete", "pruned", "raced"):
            rank += 1
        values = [v if v is not None else a.get(name)  # a trial without a value (pruned before any report, say):
                  for v, name in zip(shown_values(t) or [None] * len(objectives), objective_attrs)]  # its own
        row = {
            "rank": rank if kind in ("complete", "pruned", "raced") else None,
            "trial": t.number,
            "state": kind,
            **dict(zip(objectives, values)),
            **{column: a.get(name) for name, column in metrics.items() if column not in objectives},
            **{names[k]: params_of(t).get(k) for k in keys},
        }
        if with_repeats:
            row["repeats"] = a.get("repeat_values")
        if with_steps:
            row["epochs" if "epochs_run" in carried else "steps"] = steps_run(t)
        if with_seconds:
            row["seconds"] = round(_seconds(t), 1) if _seconds(t) is not None else None
        raced = f"raced out after {a[RACED_OUT_ATTR]} of {a.get(REPEATS_N_ATTR)} repeats" if kind == "raced" else None
        row["note"] = a.get("reason") or a.get(ERROR_ATTR) or raced or a.get("stop_reason")
        if t.number in reruns:
            row["note"] = "; ".join(filter(None, [row["note"], f"run again as trial {reruns[t.number]}"]))
        rows.append(row)
    return rows


def _require(rows: Sequence[Dict[str, Any]], column: str, what: str) -> None:
    if rows and column not in rows[0]:
        raise TableError(f"{what} needs the {column!r} column, and this study's trials carry none")


def pareto_front(rows: Sequence[Dict[str, Any]], acc: str = "best_acc",
                 axes: Optional[Dict[str, bool]] = None) -> List[Dict[str, Any]]:
    """Complete trials no other beats on every axis (column -> higher is better), sorted by the last axis.

    By default the accuracy-vs-size view: accuracy column ``acc`` (higher) against parameters (fewer).
    """
    axes = axes or {acc: True, SIZE: False}
    for column in axes:
        _require(rows, column, "--pareto")
    pts = [r for r in rows if r["state"] == "complete" and all(r.get(c) is not None for c in axes)]

    def better(o: Dict[str, Any], r: Dict[str, Any]) -> bool:  # o dominates r
        signs = [(1 if up else -1) for up in axes.values()]
        pairs = [(sign * o[c], sign * r[c]) for c, sign in zip(axes, signs)]
        return all(a >= b for a, b in pairs) and any(a > b for a, b in pairs)

    front = [r for r in pts if not any(better(o, r) for o in pts)]
    last, up = list(axes.items())[-1]
    return sorted(front, key=lambda r: -r[last] if up else r[last])


def sort_rows(rows: Sequence[Dict[str, Any]], column: str, higher_first: Optional[bool] = None) -> List[Dict[str, Any]]:
    """Rows ordered by ``column`` (default: the size low first, anything else high first); rows without it last."""
    _require(rows, column, f"--sort {column}")
    if higher_first is None:
        higher_first = column != SIZE
    sign = -1 if higher_first else 1
    numeric = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    return sorted(rows, key=lambda r: (not numeric(r.get(column)), sign * r[column] if numeric(r.get(column)) else 0))


def filter_rows(rows, states=None, max_params=None, min_acc=None, top=None, acc="best_acc", budget=SIZE):
    out = [r for r in rows if states is None or r["state"] in states]
    if max_params is not None:
        if budget is None:
            raise TableError("--max-budget needs a budget measure, and this study's trials were gated by none")
        _require(rows, budget, "--max-budget")
        out = [r for r in out if r[budget] is not None and r[budget] <= max_params]
    if min_acc is not None:
        _require(rows, acc, "--min-acc")
        out = [r for r in out if r.get(acc) is not None and r[acc] >= min_acc]
    return out[:top] if top is not None else out


def bounded(rows: Sequence[Dict[str, Any]], column: str, bound: float, at_least: bool) -> List[Dict[str, Any]]:
    """The rows whose ``column`` is at least (``at_least``) or at most ``bound``; rows without a number there go."""
    _require(rows, column, f"--{'min' if at_least else 'max'} {column}")
    numeric = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    return [r for r in rows if numeric(r.get(column)) and (r[column] >= bound if at_least else r[column] <= bound)]


def summary(study: optuna.Study) -> Dict[str, Any]:
    trials = study.get_trials(deepcopy=False)  # pragma: no mutate (only read: a copy or not)
    counts = {k: 0 for k in KINDS}
    for t in trials:
        counts[trial_kind(t)] += 1
    trained = [t for t in trials if t.user_attrs.get(LAUNCHED_ATTR) and t.state.is_finished()]
    complete = [t for t in trials if t.state == TrialState.COMPLETE and _seconds(t) is not None]
    full_steps = max((steps_run(t) or 0 for t in complete), default=0)
    # a full trial ran every step; where no trial reports steps (or several objectives: never pruned), every complete one
    full = [_seconds(t) for t in complete if (steps_run(t) or 0) == full_steps]
    full_cost = statistics.median(full) if full else None
    n_repeats = max((int(t.user_attrs.get(REPEATS_N_ATTR, 1)) for t in trials), default=1)
    saved_pruning = saved_rejecting = saved_racing = None
    if full_cost is not None:
        repeat_cost = full_cost / n_repeats  # a pruned trial stopped in its first repeat: the rest never ran
        saved_pruning = sum(full_cost - repeat_cost * (steps_run(t) or full_steps) / (full_steps or 1)
                            for t in trials if trial_kind(t) == "pruned") if full_steps else 0.0
        saved_rejecting = counts["rejected"] * full_cost
        saved_racing = sum(repeat_cost * (int(t.user_attrs.get(REPEATS_N_ATTR, 1)) - t.user_attrs[RACED_OUT_ATTR])
                           for t in trials if trial_kind(t) == "raced")
    out = {
        "study": study.study_name,
        "metric": objective_names(study),
        "direction": [d.name.lower() for d in study.directions],
        "trials": counts,
        "training_seconds": sum(_seconds(t) or 0.0 for t in trained),
        "full_trial_seconds": full_cost,
        "saved_by_pruning_seconds": saved_pruning,
        "saved_by_rejecting_seconds": saved_rejecting,
        "repeats": n_repeats,
        "saved_by_racing_seconds": saved_racing if n_repeats > 1 else None,
        "best": None,
    }
    if any("target_acc" in t.user_attrs for t in trials):  # an app that says what "reached" means
        out.update(_target_summary(complete))
    if len(study.directions) == 1 and any(t.state == TrialState.COMPLETE for t in trials):
        b = study.best_trial
        out["best"] = {"trial": b.number, "value": b.value, "params": b.user_attrs.get("n_params"),
                       "hyperparameters": b.params}
    return out


def _target_summary(complete: Sequence[FrozenTrial]) -> Dict[str, Any]:
    """Trials that reached their stored target_acc within the budget, held it over the last k epochs, the smallest."""
    def within(t: FrozenTrial) -> bool:
        limit = attr(t, BUDGET_MAX_ATTR)
        return limit is None or t.user_attrs.get("n_params") is None or t.user_attrs["n_params"] <= limit

    def every_repeat_reached(t: FrozenTrial) -> bool:
        return all(r.get("epoch_reached_target") is not None for r in t.user_attrs.get(REPEAT_ATTRS_ATTR) or [t.user_attrs])

    reached = [t for t in complete if "target_acc" in t.user_attrs and every_repeat_reached(t) and within(t)]
    held = [t for t in reached if (worst_repeat(t, "min_last_k_test_acc") or -1) >= t.user_attrs["target_acc"]]
    sized = [t for t in held if t.user_attrs.get("n_params") is not None]
    # the fewest parameters; of equally small trials, the one that held with the most margin
    smallest = min(sized, key=lambda t: (t.user_attrs["n_params"], -worst_repeat(t, "min_last_k_test_acc"), t.number),
                   default=None)
    return {
        "reached_target_under_budget": len(reached),
        "held_target_under_budget": len(held),
        "smallest_that_held": None if smallest is None else {
            "trial": smallest.number, "params": smallest.user_attrs["n_params"],
            "min_last_k": worst_repeat(smallest, "min_last_k_test_acc")},
    }
