"""What a sweep prints: the header, a line per trial, and optimization_results.yaml at the end."""

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional

import optuna
from omegaconf import OmegaConf
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

from .checkpoints import shown as shown_checkpoints
from .samplers import FirstRepeatsPruner
from .search_space import describe
from .storage import masked
from .trials import is_trained

log = logging.getLogger("sweeper.optuna_sweeper")


def metric_names(sweeper, study: optuna.Study) -> List[str]:
    return list(study.metric_names or sweeper.objectives or ["objective"] * len(sweeper.directions))


def log_header(sweeper, study: optuna.Study, distributions: Dict[str, BaseDistribution], fixed: Dict[str, str],
               path: Optional[Path]) -> None:
    trials = study.get_trials(deepcopy=False)  # pragma: no mutate (only read: a copy or not)
    done = sum(is_trained(t) for t in trials)
    url = masked(sweeper.storage_url)
    log.info("storage: %s%s", url, f" ({path})" if path and str(path) not in url else "")  # a relative file: where it is
    log.info("study: %s (%s %s), %d of %d trained trials done", sweeper.study_name, "/".join(sweeper.directions),
             "/".join(metric_names(sweeper, study)), done, sweeper.n_trials)
    pruner = type(study.pruner).__name__
    if isinstance(study.pruner, FirstRepeatsPruner):
        pruner = f"{type(study.pruner.pruner).__name__} (against every trial whose first repeat ran all its steps)"
    if not sweeper.prunes:
        pruner = "none (Optuna prunes single-objective studies only)"
    log.info("sampler: %s, pruner: %s, n_jobs: %d", type(study.sampler).__name__, pruner, sweeper.n_jobs)
    if sweeper.gate.active:
        limit = OmegaConf.select(sweeper.config, "hydra.sweeper.budget.max", default=None)
        shown = f"{limit:,}" if isinstance(limit, (int, float)) else "none (recorded only)"
        log.info("budget: %s <= %s, measured by %s before launch (over-budget trials are recorded, never trained)",
                 sweeper.gate.name, shown, sweeper.gate.measure_path)
    else:
        log.info("budget: none (hydra.sweeper.budget.measure is not set)")
    if sweeper.repeats.active:
        log.info("repeats: %s", sweeper.repeats.describe())
    if sweeper.n_complete_trials is not None:
        log.info("ends at %d complete trials (or %d trained)", sweeper.n_complete_trials, sweeper.n_trials)
    log.info("checkpoints: %s (jobs that save them resume a stopped trial there)", shown_checkpoints(sweeper.checkpoints))
    log.info("search space: %s", ", ".join(f"{k}: {describe(v)}" for k, v in distributions.items()) or "custom")
    if fixed:
        log.info("fixed: %s", " ".join(f"{k}={v}" for k, v in fixed.items()))


def log_trial(sweeper, study: optuna.Study, number: int, state: TrialState, values: Optional[List[float]],
              attrs: Dict[str, Any], seconds: float, error: Optional[str]) -> None:
    trials = study.get_trials(deepcopy=False)  # pragma: no mutate (only read: a copy or not)
    left = max(0, sweeper.n_trials - sum(is_trained(t) for t in trials))
    value = "/".join(f"{v:.4g}" for v in values) if values else "-"
    best = ""
    if len(sweeper.directions) == 1:
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if complete:
            pick = max if sweeper.directions[0] == "maximize" else min
            b = pick(complete, key=lambda t: t.value)
            best = f" | best {b.value:.4g} (trial {b.number})"
    parts = [f"trial {number} {state.name} {value}"]
    if attrs.get(sweeper.gate.name) is not None:
        parts.append(f"{attrs[sweeper.gate.name]:,} {sweeper.gate.name}")
    steps = len(next((t.intermediate_values for t in trials if t.number == number), {}))
    if steps:
        parts.append(f"{steps} steps")
    parts.append(f"{seconds:.0f}s{best}")
    parts.append(f"{left} left")
    if error:
        parts.append(error)
    log.info("%s", " | ".join(parts))


def write_results(sweeper, study: optuna.Study, sweep_dir: str) -> None:
    """optimization_results.yaml in the sweep folder, as hydra-optuna-sweeper writes it."""
    trials = study.get_trials(deepcopy=False)  # pragma: no mutate (only read: a copy or not)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        log.info("no trial completed")
        return
    if len(sweeper.directions) == 1:
        best = study.best_trial
        results = {"name": "optuna", "best_params": best.params, "best_value": best.value}
        log.info("best trial %d: %s = %.4g with %s", best.number, metric_names(sweeper, study)[0], best.value,
                 best.params)
    else:
        results = {"name": "optuna", "solutions": [{"params": t.params, "values": t.values} for t in study.best_trials]}
        log.info("Pareto front: %d trials", len(study.best_trials))
    OmegaConf.save(OmegaConf.create(results), Path(sweep_dir) / "optimization_results.yaml")
