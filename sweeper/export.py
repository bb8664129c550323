"""Export a trial as an experiment config that ``mnist-train +experiment=NAME`` reproduces.

The trial's overrides (as stored by the sweeper) are composed exactly as the sweeper composed
them for the budget check, and the whole resulting config is written as a ``_global_``
experiment. Only the sweeper's per-job additions are left out: its reporter callback and the
CPU thread share (``trainer.callbacks.optuna_trial``, ``trainer.threads``).
"""

from pathlib import Path
from typing import Any, Dict, List, Optional

import optuna
from omegaconf import OmegaConf
from optuna.trial import TrialState

from mnist_arch.config import CONF_DIR, compose_config


class ExportError(Exception):
    pass


def trial_config(overrides: List[str]) -> Dict[str, Any]:
    """The composed training config of a trial, without the hydra node."""
    cfg = OmegaConf.to_container(compose_config(overrides), resolve=True)
    cfg.pop("hydra", None)
    return cfg


def choose_trial(study: optuna.Study, number: Optional[int]) -> optuna.trial.FrozenTrial:
    trials = study.get_trials(deepcopy=False)
    if number is not None:
        match = [t for t in trials if t.number == number]
        if not match:
            raise ExportError(f"--trial {number}: no such trial in study {study.study_name!r} (0..{len(trials) - 1})")
        return match[0]
    if len(study.directions) > 1:
        raise ExportError("a multi-objective study has no single best trial: pick one with --trial N (see --pareto)")
    if not any(t.state == TrialState.COMPLETE for t in trials):
        raise ExportError(f"study {study.study_name!r} has no complete trial to export")
    return study.best_trial


def export_trial(study: optuna.Study, name: str, number: Optional[int] = None, conf_dir: Optional[str] = None) -> str:
    trial = choose_trial(study, number)
    overrides = trial.user_attrs.get("overrides")
    if overrides is None:
        raise ExportError(f"trial {trial.number} has no stored overrides (not run by the optuna_budget sweeper)")
    target = Path(conf_dir or CONF_DIR) / "experiment" / f"{name}.yaml"
    if target.exists():
        raise ExportError(f"{target} exists; choose another name or delete it")
    cfg = trial_config(overrides)
    value = ", ".join(f"{n}={v:.4g}" for n, v in zip(study.metric_names or ["objective"], trial.values or [])
                      if n != "n_params")  # the size follows in words
    header = (
        "# @package _global_\n"
        f"# Exported by mnist-results from study {study.study_name!r}, trial {trial.number} "
        f"({trial_kind_text(trial)}{', ' + value if value else ''}, {trial.user_attrs.get('n_params', '?')} parameters).\n"
        f"# Its overrides: {' '.join(overrides)}\n"
        f"# Run: mnist-train +experiment={name}\n"
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(header + OmegaConf.to_yaml(OmegaConf.create(cfg)))
    return f"wrote {target}: trial {trial.number}; run it with: mnist-train +experiment={name}"


def trial_kind_text(trial: optuna.trial.FrozenTrial) -> str:
    return trial.state.name.lower()
