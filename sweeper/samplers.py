"""Optuna samplers and pruners from the ``hydra.sweeper.sampler`` / ``pruner`` config nodes.

Every keyword of the target's constructor is passed on. A key the target does not take is
left out with one warning line: it is what a config group leaves behind when only
``sampler._target_`` is overridden (say TPE's ``n_startup_trials`` under RandomSampler).
"""

import importlib.util
import inspect
import logging
import sys
import warnings
from typing import Any, Callable, Dict, List, Optional

import optuna
from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

from .errors import SweepError, one_line
from .repeats import REPEATS_RUN_ATTR
from .search_space import SearchSpaceError, grid_choices
from .storage import SEARCH_SPACE_ATTR

log = logging.getLogger(__name__)


def motpe(n_ehvi_candidates: int = 24, **kwargs: Any) -> optuna.samplers.TPESampler:
    """``hydra/sweeper/sampler=motpe``, as hydra-optuna-sweeper configs name it."""
    log.warning("hydra/sweeper/sampler=motpe is deprecated: Optuna removed MOTPESampler; TPESampler, which handles "
                "several objectives, is used (hydra/sweeper/sampler=tpe)")
    return optuna.samplers.TPESampler(n_ei_candidates=n_ehvi_candidates, **kwargs)


def _accepted(target: Callable) -> Optional[set]:
    params = inspect.signature(target).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return None  # takes anything
    return set(params)


def _build(node: DictConfig, what: str, extra: Dict[str, Any]) -> Any:
    if not isinstance(node, DictConfig):  # e.g. hydra.sweeper.pruner=none, a value where a group option was meant
        raise SweepError(f"hydra.sweeper.{what}={node!r} is a value, not a {what} config: choose one with "
                         f"hydra/sweeper/{what}={node}, or give hydra.sweeper.{what}._target_")
    cfg = OmegaConf.to_container(node, resolve=True)
    target_name = cfg.pop("_target_", None)
    cfg.pop("_partial_", None)
    try:
        target = get_method(target_name)
    except Exception as exc:
        raise SweepError(f"hydra.sweeper.{what}._target_={target_name!r} cannot be imported: {one_line(exc)}") from None
    accepted = _accepted(target)
    if accepted is not None:
        left = sorted(k for k in cfg if k not in accepted)
        if left:
            log.warning("hydra.sweeper.%s: %s takes no %s; left out", what, target_name.rsplit(".", 1)[-1], ", ".join(left))
        cfg = {k: v for k, v in cfg.items() if k in accepted}
        extra = {k: v for k, v in extra.items() if k in accepted and cfg.get(k) is None}
    kwargs = {**cfg, **extra}
    for key, value in list(kwargs.items()):  # callables and nested samplers given as {_target_: ...}
        if isinstance(value, dict) and "_target_" in value:
            kwargs[key] = _build(OmegaConf.create(value), f"{what}.{key}", {})
    if kwargs.get("group") and kwargs.get("multivariate") is False:
        kwargs["group"] = False  # TPE's group works on the multivariate model only
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # e.g. TPE's group=True
            warnings.simplefilter("ignore", FutureWarning)  # Optuna 5's deprecated TPE keywords, when given
            return target(**kwargs)
    except Exception as exc:
        raise SweepError(f"hydra.sweeper.{what} ({target_name}) cannot be made: {one_line(exc)}") from None


def make_sampler(node: DictConfig, distributions: Dict[str, BaseDistribution], offset: int,
                 constraints_func: Optional[Callable] = None) -> optuna.samplers.BaseSampler:
    """The sampler, its seed moved on by ``offset`` (the study's trials so far plus the worker's index),
    so that processes and invocations do not propose alike."""
    node = node.copy()
    if node.get("seed") is not None and offset:
        node.seed = node.seed + offset
    extra: Dict[str, Any] = {}
    if str(node.get("_target_", "")).endswith("GridSampler"):
        try:
            extra["search_space"] = grid_choices(distributions)
        except SearchSpaceError as exc:
            raise SweepError(str(exc)) from None
    if constraints_func is not None:
        extra["constraints_func"] = constraints_func
    return _build(node, "sampler", extra)


# what a sampler imports only once it samples (a trial would fail mid-claim, left RUNNING): checked at the start
SAMPLER_NEEDS = {
    "optuna.samplers.GPSampler": ("scipy", "torch"),
    "optuna.samplers.QMCSampler": ("scipy",),
    "optuna.samplers.CmaEsSampler": ("cmaes",),
}


def _importable(module: str) -> bool:
    if module in sys.modules:
        return sys.modules[module] is not None  # None: its import is known to fail
    return importlib.util.find_spec(module) is not None


def check_sampler_needs(node: DictConfig) -> None:
    """One line naming what to install, before any trial, when the sampler needs a package that is missing."""
    target = str(node.get("_target_", "")) if isinstance(node, DictConfig) else ""
    missing = [m for m in SAMPLER_NEEDS.get(target, ()) if not _importable(m)]
    if missing:
        extra = " torch" if "torch" in missing else ""
        raise SweepError(f"hydra.sweeper.sampler ({target}) needs {' and '.join(SAMPLER_NEEDS[target])}, and "
                         f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed: "
                         f"pip install 'mnist-arch-sweep[samplers]'{extra}")


SAMPLER_START_ATTR = "sampler_start"  # "<sampler target>:<seed>" a study's first process began with
# Samplers whose first proposals are RandomSampler(seed)'s (TPE's start-up trials, NSGA-II/III's first
# generation, GP's start): under one seed they all begin with the same points (tests/test_sweeper_config.py)
RANDOM_START = frozenset({"optuna.samplers.RandomSampler", "optuna.samplers.TPESampler", "sweeper.samplers.motpe",
                          "optuna.samplers.NSGAIISampler", "optuna.samplers.NSGAIIISampler", "optuna.samplers.GPSampler"})


def same_start(study: optuna.Study, node: DictConfig) -> Optional[str]:
    """For a study with no trials yet, seeded: record how it begins (the seed, and the sampler unless it is one
    of RANDOM_START, which all begin alike), and return the name of another study in the storage that began
    the same way over the same search space (its first, random proposals are this study's); None otherwise.

    Call after ``check_search_space``, which records the study's search space.
    """
    seed = node.get("seed")
    if seed is None or study.get_trials(deepcopy=False):
        return None
    storage, study_id = study._storage, study._study_id
    target = node.get("_target_")
    start = f"random:{seed}" if target in RANDOM_START else f"{target}:{seed}"
    storage.set_study_system_attr(study_id, SAMPLER_START_ATTR, start)
    space = storage.get_study_system_attrs(study_id).get(SEARCH_SPACE_ATTR)
    for other in storage.get_all_studies():
        attrs = other.system_attrs
        if other._study_id != study_id and attrs.get(SAMPLER_START_ATTR) == start and attrs.get(SEARCH_SPACE_ATTR) == space:
            return other.study_name
    return None


def make_pruner(node: DictConfig, repeated: bool = False) -> optuna.pruners.BasePruner:
    """The configured pruner; with repeats (``repeated``), a median or percentile pruner judges each
    trial against every trial whose first repeat ran all its steps (FirstRepeatsPruner)."""
    pruner = _build(node, "pruner", {})
    if repeated and isinstance(pruner, optuna.pruners.PercentilePruner):  # MedianPruner is one
        return FirstRepeatsPruner(pruner)
    return pruner


class FirstRepeatsPruner(optuna.pruners.BasePruner):
    """A percentile (or median) pruner shown, as its complete trials, every trial whose first repeat
    ran all its steps: complete ones, and those raced out or still running their later repeats.

    Optuna's percentile pruners compare a trial's reports with the complete trials' at the same step.
    Under repeats the reports are the first repeat's, and a trial completes only once every repeat
    has run without being raced out: those few are the study's best, and a median of them prunes
    far more than half of the trials, winners included.
    """

    def __init__(self, pruner: optuna.pruners.PercentilePruner):
        self.pruner = pruner

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return self.pruner.prune(_FirstRepeatsAsComplete(study), trial)


class _FirstRepeatsAsComplete:
    """The study as a percentile pruner reads it: complete trials are those whose first repeat ran all its steps."""

    def __init__(self, study: optuna.Study):
        self._study = study

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def get_trials(self, deepcopy: bool = True, states: Optional[Any] = None) -> List[optuna.trial.FrozenTrial]:
        if states is None or TrialState.COMPLETE not in states:
            return self._study.get_trials(deepcopy=deepcopy, states=states)
        wider = (*states, TrialState.PRUNED, TrialState.RUNNING)  # a pruned first repeat counts as no repeat run
        return [t for t in self._study.get_trials(deepcopy=deepcopy, states=wider)
                if t.state in states or t.user_attrs.get(REPEATS_RUN_ATTR, 0) >= 1]


def tell(study: optuna.Study, trial: Any, state: TrialState, values: Optional[List[float]] = None) -> None:
    """``study.tell``, where a grid sampler stopping the study after its last point is not an error.

    GridSampler calls ``study.stop()`` once every point has had its trial; outside an objective
    function that raises, whether the last point trained or was recorded untrained (over budget).
    """
    try:
        study.tell(trial, state=state, values=values, skip_if_finished=True)
    except RuntimeError as exc:
        if "Study.stop" not in str(exc):
            raise


def grid_size(sampler: optuna.samplers.BaseSampler) -> Optional[int]:
    """How many points a grid sampler's grid has; None for other samplers."""
    if isinstance(sampler, optuna.samplers.GridSampler):
        return len(sampler._all_grids)
    return None
