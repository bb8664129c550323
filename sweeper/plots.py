"""PNG figures of a study: history, importances, parallel coordinates, accuracy vs parameters, curves."""

import warnings
from functools import partial
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402

from .table import ACC_COLUMNS, SIZE, pareto_front  # noqa: E402
from .errors import squashed  # noqa: E402
from .repeats import REPEAT_ATTRS_ATTR  # noqa: E402
from .trials import BUDGET_MAX_ATTR, attr  # noqa: E402

TOP_CURVES = 8


def _save(fig, path: Path, written: List[Path]) -> None:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    written.append(path)


def _optuna_plot(make, study, path: Path, written: List[Path], notes: List[str]) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ax = make(study)
        fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
        _save(fig, path, written)
    except Exception as exc:  # e.g. too few complete trials for importances
        notes.append(f"{path.name}: skipped ({squashed(exc, 120)})")
        plt.close("all")


def accuracy_vs_parameters(rows: Sequence[Dict[str, Any]], max_params, target: Optional[float], path: Path,
                           written: List[Path], acc: str = "best_acc") -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    kinds = [("complete", "complete", "o", "tab:blue"), ("pruned", "pruned", "v", "tab:gray")]
    if any(r["state"] == "raced" for r in rows):  # repeated trials: the repeats run so far, aggregated
        kinds.append(("raced", "raced out", "^", "tab:purple"))
    for state, name, marker, color in kinds:
        pts = [r for r in rows if r["state"] == state and r.get(acc) is not None and r["params"] is not None]
        ax.scatter([r["params"] for r in pts], [r[acc] for r in pts], marker=marker, color=color,
                   label=f"{name} ({len(pts)})", alpha=0.8)
    rejected = [r["params"] for r in rows if r["state"] == "rejected" and r["params"] is not None]
    if rejected:
        ax.scatter(rejected, [ax.get_ylim()[0]] * len(rejected), marker="x", color="tab:red",
                   label=f"rejected, over budget ({len(rejected)})")
    front = pareto_front(rows, acc)
    if front:
        ax.step([r["params"] for r in front], [r[acc] for r in front], where="post", color="tab:green",
                label="Pareto front")
    if max_params:
        ax.axvline(max_params, color="tab:red", linestyle="--", label=f"{max_params:,} parameters")
    if target is not None:
        ax.axhline(target, color="tab:orange", linestyle="--", label=f"{target}%")
    ax.set_xlabel("parameters")
    ax.set_ylabel(ACC_COLUMNS[acc])
    ax.set_title("accuracy versus parameters")
    ax.legend(fontsize=8)
    _save(fig, path, written)


def trial_curves(trial: optuna.trial.FrozenTrial) -> List[List[float]]:
    """A trial's curves, one per repeat: mnist_arch's ``curve`` attribute (test accuracy per epoch) where
    the trial carries it, else what the job reported per step (``sweeper.api``: the intermediate values;
    for a repeated trial, those of the repeat it was pruned or finished in)."""
    attrs = trial.user_attrs
    runs = [a.get("curve") or [] for a in attrs.get(REPEAT_ATTRS_ATTR) or []] or [attrs.get("curve") or []]
    if any(runs):
        return runs
    return [[v for _, v in sorted(trial.intermediate_values.items())]] if trial.intermediate_values else []


def curves(study: optuna.Study, rows: Sequence[Dict[str, Any]], target: Optional[float], path: Path,
           written: List[Path]) -> None:
    """The top trials' per-epoch curves; a repeated trial draws one line per repeat, in one colour."""
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}  # pragma: no mutate (only read: a copy or not)
    top = [r for r in rows if r["state"] in ("complete", "pruned", "raced")][:TOP_CURVES]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    repeated, late = False, []
    reported = not any(t.user_attrs.get("curve") for t in by_number.values())  # any app's per-step reports
    for i, r in enumerate(top):
        trial = by_number[r["trial"]]
        runs = trial_curves(trial)
        repeated |= len(runs) > 1
        style = "-" if r["state"] == "complete" else ":"
        label = f"trial {r['trial']} ({r['state']}" + (f", {len(runs)} repeats)" if len(runs) > 1 else ")")
        for k, curve in enumerate(runs):
            late += curve[min(len(curve) - 1, max(1, len(curve) // 4)):]  # the first epochs' low start would squash the rest
            ax.plot(range(1, len(curve) + 1), curve, style, color=colours[i % len(colours)], marker=".",
                    label=label if k == 0 else None)
    if target is not None:
        ax.axhline(target, color="tab:orange", linestyle="--", linewidth=1)
    if late and not reported:  # accuracy: the first epochs' low start would squash the rest; any app's values all shown
        low, high = min(late + ([target] if target is not None else [])), max(late)
        margin = max(0.05, (high - low) * 0.1)
        ax.set_ylim(low - margin, high + margin)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("step" if reported else "epoch")
    ax.set_ylabel("reported value" if reported else "test accuracy (%)")
    each = "; a line per repeat" if repeated else ""
    what = "the values reported per step" if reported else "per-epoch test accuracy"
    ax.set_title(f"{what}, top {len(top)} trials\n(dotted: pruned or raced out{each})")
    if top:
        ax.legend(fontsize=8)
    _save(fig, path, written)


def roomy_parallel(make):
    """Optuna's parallel-coordinates plot, an inch and a half per axis and its title clear of the colour bar."""

    def draw(study, **kwargs):
        ax = make(study, **kwargs)
        fig = ax.figure
        n_axes = max(1, len(ax.get_xticks()))
        fig.set_size_inches(max(6.4, 1.5 * n_axes + 2), 4.8)
        ax.set_title(ax.get_title(), pad=16)
        return ax

    return draw


def write_plots(study: optuna.Study, rows: Sequence[Dict[str, Any]], out: Path, acc: str = "best_acc") -> List[Path]:
    from optuna.visualization import matplotlib as ovm

    out.mkdir(parents=True, exist_ok=True)
    written: List[Path] = []
    notes: List[str] = []
    parallel = roomy_parallel(ovm.plot_parallel_coordinate)
    if len(study.directions) == 1:
        _optuna_plot(ovm.plot_optimization_history, study, out / "history.png", written, notes)
    else:  # several objectives: parallel coordinates of the first (the accuracy)
        first = (study.metric_names or ["objective 0"])[0]
        parallel = partial(parallel, target=lambda t: t.values[0], target_name=first)
    _optuna_plot(ovm.plot_param_importances, study, out / "importances.png", written, notes)  # one bar per objective
    _optuna_plot(parallel, study, out / "parallel.png", written, notes)
    trials = study.get_trials(deepcopy=False)  # pragma: no mutate (only read: a copy or not)
    max_params = next((attr(t, BUDGET_MAX_ATTR) for t in trials if attr(t, BUDGET_MAX_ATTR)), None)
    target = next((t.user_attrs["target_acc"] for t in trials if t.user_attrs.get("target_acc") is not None), None)
    if rows and acc in rows[0] and SIZE in rows[0]:  # an app whose trials carry accuracy and size
        accuracy_vs_parameters(rows, max_params, target, out / "accuracy_vs_params.png", written, acc)
    else:
        notes.append(f"accuracy_vs_params.png: skipped (the trials carry no {acc!r} and {SIZE!r})")
    if any(trial_curves(t) for t in trials):
        curves(study, rows, target, out / "curves.png", written)
    else:
        notes.append("curves.png: skipped (no trial reported per step: sweeper.api's report(), or a 'curve' attribute)")
    for note in notes:
        print(note)
    return written
