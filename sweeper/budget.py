"""The budget gate: compose a trial's config and measure it before anything is launched.

Off unless ``hydra.sweeper.budget.measure`` names a function ``fn(cfg) -> number``. ``max`` is
read from each trial's composed config, so an interpolation such as ``${budget.max_params}``
follows whatever the trial sets. A trial whose config cannot be composed or measured is
"unbuildable": recorded failed, never launched.
"""

import time
from dataclasses import dataclass
from typing import Any, Callable, List, Optional

import optuna
from omegaconf import DictConfig, OmegaConf

from .errors import SweepError, one_line
from .locate import locate_callable
from .trials import BUDGET_CONSTRAINT, BUDGET_MAX_ATTR, BUDGET_NAME_ATTR, ERROR_ATTR, OVERRIDES_ATTR, REJECTED

BUDGET_KEY = "hydra.sweeper.budget"


@dataclass
class Verdict:
    """Why a claimed trial is not launched: over the budget (``rejected``), a repeat of a trained
    trial (``duplicate``), or unbuildable."""

    rejected: bool
    value: Optional[float]
    message: str
    duplicate: bool = False


class BudgetGate:
    def __init__(self, load_config: Callable[[List[str]], DictConfig], measure: Optional[str], name: str,
                 task_function: Any = None):
        """``load_config(overrides)`` composes a trial's config as its job would get it; a ``measure``
        with a leading dot names a file beside the app's script (as custom_search_space may)."""
        self.load_config = load_config
        self.name = name
        self.measure_path = measure
        self._measure: Optional[Callable[[Any], Any]] = None
        if measure:
            try:
                self._measure = locate_callable(measure, task_function)
            except Exception as exc:
                raise SweepError(f"{BUDGET_KEY}.measure={measure!r} cannot be imported: {one_line(exc)}") from None

    @property
    def active(self) -> bool:
        return self._measure is not None

    def _measured(self, overrides: List[str]):
        """(value, max, where max comes from) for the trial's config; raises what composing or measuring raises."""
        cfg = self.load_config(list(overrides))
        if self._measure is None:
            return None, None, None
        value = self._measure(cfg)
        limit = OmegaConf.select(cfg, f"{BUDGET_KEY}.max", default=None)
        raw = OmegaConf.to_container(OmegaConf.select(cfg, BUDGET_KEY), resolve=False).get("max")
        source = raw[2:-1] if isinstance(raw, str) and raw.startswith("${") and raw.endswith("}") else f"{BUDGET_KEY}.max"
        return value, limit, source

    def check(self, trial: optuna.Trial, overrides: List[str]) -> Optional[Verdict]:
        """None when the trial may be launched, else why not; what it measured is stored on the trial."""
        started = time.perf_counter()
        trial.set_user_attr(OVERRIDES_ATTR, list(overrides))
        try:
            value, limit, source = self._measured(overrides)
        except Exception as exc:
            message = one_line(exc)
            trial.set_user_attr(ERROR_ATTR, f"cannot build the trial's config: {message}")
            return Verdict(False, None, message)
        if value is not None:
            trial.set_user_attr(self.name, value)
            trial.set_user_attr(BUDGET_NAME_ATTR, self.name)
            trial.set_user_attr(BUDGET_MAX_ATTR, limit)
            excess = float(value - limit) if limit is not None else -1.0
            trial.set_user_attr(BUDGET_CONSTRAINT, excess)
            if hasattr(trial, "set_constraint"):  # Optuna 5: samplers that handle constraints learn the infeasible region
                trial.set_constraint(BUDGET_CONSTRAINT, excess)
            trial.set_user_attr("budget_check_seconds", time.perf_counter() - started)
            if limit is not None and value > limit:
                reason = f"{self.name}={value:,} > {source}={limit:,}"
                trial.set_user_attr("rejected", REJECTED)
                trial.set_user_attr("reason", reason)
                return Verdict(True, value, reason)
        return None

    def check_base_config(self, fixed_overrides: List[str], trial_error: str) -> None:
        """After an unbuildable trial: stop at once if the config fails the same way without the searched values.

        Then the fault is the sweep's (a broken config file, a config edited under a running
        sweep), and every further trial would fail alike. A different error (say, a mandatory
        value only the search space fills) leaves the verdict to the trial.
        """
        try:
            self._measured(fixed_overrides)
        except Exception as exc:
            if one_line(exc) != trial_error:
                return
            raise SweepError(
                f"every trial would fail: the sweep's config cannot be built even without the searched values: "
                f"{one_line(exc)}"
            ) from None

    def describe(self) -> str:
        if not self.active:
            return f"none ({BUDGET_KEY}.measure is not set)"
        return f"{self.name} = {self.measure_path}(cfg), over {BUDGET_KEY}.max: recorded, never trained"
