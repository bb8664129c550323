"""``hydra.sweeper.callbacks``: Optuna study callbacks, called after each trial is told.

Each entry is a config node with ``_target_`` (and its arguments), for example
``optuna_integration.MLflowCallback``; each is called as ``callback(study, frozen_trial)``, as
``study.optimize`` would call it, for every trial the sweep records: complete, pruned, raced
out, failed, and the rejected ones that were never trained (their state and ``rejected`` user
attribute say which). A callback that raises is reported in one warning line; the sweep goes on.
"""

import logging
from typing import Any, Callable, List, Optional, Sequence

import optuna
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig

from .errors import SweepError, one_line

log = logging.getLogger("sweeper.optuna_sweeper")

StudyCallback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]


def make_callbacks(nodes: Optional[Sequence[Any]]) -> List[StudyCallback]:
    if nodes is None:
        return []
    if not isinstance(nodes, (list, tuple, ListConfig)):
        raise SweepError("hydra.sweeper.callbacks must be a list of {_target_: ...} nodes")
    made = []
    for k, node in enumerate(nodes):
        target = node.get("_target_") if isinstance(node, (dict, DictConfig)) else None
        if target is None:
            raise SweepError(f"hydra.sweeper.callbacks[{k}] has no _target_: give the callback's dotted path, "
                             "e.g. {_target_: optuna_integration.MLflowCallback}")
        try:
            callback = instantiate(node, _convert_="all")
        except Exception as exc:
            cause = exc.__cause__ or exc
            raise SweepError(f"hydra.sweeper.callbacks[{k}] ({target}) cannot be made: {one_line(cause)}") from None
        if not callable(callback):
            raise SweepError(f"hydra.sweeper.callbacks[{k}] ({target}) is not callable as callback(study, trial)")
        made.append(callback)
    return made


def notify(callbacks: Sequence[StudyCallback], study: optuna.Study, trial_id: int) -> None:
    """Call every callback with the trial as now recorded; a failing callback is one warning line."""
    if not callbacks:
        return
    frozen = study._storage.get_trial(trial_id)
    for callback in callbacks:
        try:
            callback(study, frozen)
        except Exception as exc:
            log.warning("hydra.sweeper.callbacks: %s failed on trial %d (the sweep goes on): %s",
                        type(callback).__name__, frozen.number, f"{type(exc).__name__}: {one_line(exc)}")
