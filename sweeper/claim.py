"""The claim step: under the study's lock, decide a worker's next move and record it.

Fail trials whose worker stopped heartbeating, stop at n_trials trained trials (or a grid's
size, or n_trials failures, or n_complete_trials completed ones), ask Optuna for a trial, run the budget gate, and either mark the
trial launched or record it untrained, all before the lock is let go.
"""

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from .budget import BudgetGate, Verdict
from .errors import SweepError
from .interrupts import INTERRUPTED_ATTR
from .liveness import (
    LOST_WORKER_ATTR, fail_never_launched, fail_stale_trials, fail_unlaunched_trials, worker_marks,
)
from .samplers import tell
from .search_space import format_override
from .storage import claim_lock
from .trials import DUPLICATE, ERROR_ATTR, LAUNCHED_ATTR, OVERRIDES_ATTR, is_trained

log = logging.getLogger("sweeper.optuna_sweeper")


def _key(params: Dict[str, Any]) -> str:
    return repr(sorted(params.items()))


def _in_space(params: Dict[str, Any], distributions: Dict[str, BaseDistribution]) -> bool:
    """Whether a trial's point lies in this search space (a study resumed over a changed one holds others)."""
    return set(params) == set(distributions) and all(
        distributions[k]._contains(distributions[k].to_internal_repr(v)) for k, v in params.items())


@dataclass
class Claim:
    """What a claim decided: ``run`` the trial, ``skip`` it (recorded untrained), ``wait``, or ``done``."""

    action: str
    trial: Optional[optuna.Trial] = None
    overrides: Optional[List[str]] = None
    verdict: Optional[Verdict] = None


@dataclass
class ClaimStep:
    storage_url: Optional[str]
    gate: BudgetGate
    n_trials: int
    max_failure_rate: float
    grace_period: float
    retry_stale_trials: bool
    grid_size: Optional[int]
    space_size: Optional[int]  # distinct points of a discrete search space; None: continuous or custom
    custom_search_space: Optional[Callable[[Any, optuna.Trial], None]]
    config: Any
    n_complete_trials: Optional[int] = None  # end once this many completed (pruned, raced and failed ones aside)
    checkpoints: Any = None  # where jobs' checkpoints go: a lost trial's is removed unless it runs again
    _infeasible: set = field(default_factory=set)  # points found over budget or unbuildable by this invocation
    # the trial this step last asked for, from the ask on: an interrupt at any moment finds it (sweeper's _interrupted)
    open_trial: Optional[optuna.Trial] = None
    _cut_short: Optional[optuna.Trial] = None  # the trial asked for by a claim that has not reached its caller
    _capped_said: bool = False
    _exhausted_said: bool = False

    def __call__(self, study: optuna.Study, distributions: Dict[str, BaseDistribution], fixed: Dict[str, str],
                 worker: str) -> Claim:
        """The whole claim runs under the lock, a rejected trial's tell included, so any RUNNING trial
        without the "launched" mark seen here was left by a claim that a database outage cut short.
        """
        with claim_lock(self.storage_url):
            self._settle_cut_short(study)
            claim = self._claim(study, distributions, fixed, worker)
        self._cut_short = None  # the claim reached its caller, the lock let go: its trial is the caller's
        return claim

    def _claim(self, study: optuna.Study, distributions: Dict[str, BaseDistribution], fixed: Dict[str, str],
               worker: str) -> Claim:
        fail_stale_trials(study, self.grace_period, self.retry_stale_trials, self.checkpoints)
        fail_unlaunched_trials(study)
        trials = study.get_trials(deepcopy=False)  # pragma: no mutate (only read: a copy or not)
        capped = self._check_failures(trials)
        trained = [t for t in trials if is_trained(t)]
        running = any(t.state == TrialState.RUNNING for t in trained)
        trained_here = {_key(t.params) for t in trained if _in_space(t.params, distributions)}
        exhausted = self.space_size is not None and len(trained_here | self._infeasible) >= self.space_size
        if exhausted and not trained_here:
            raise SweepError(f"every one of the search space's {self.space_size} points is over budget or "
                             "unbuildable: the search space is over budget; narrow it or raise hydra.sweeper.budget.max")
        if len(trained) >= self.n_trials or capped or exhausted or self._grid_done(trials) or self._enough_complete(trained):
            if exhausted and not running and not self._exhausted_said:
                infeasible = f" ({len(self._infeasible)} over budget or unbuildable)" if self._infeasible else ""
                log.info("every one of the search space's %d points has been tried%s: the sweep ends",
                         self.space_size, infeasible)
                self._exhausted_said = True
            return Claim("wait" if running else "done")
        trial = self.open_trial = self._cut_short = study.ask(distributions)
        if self.custom_search_space is not None:
            self.custom_search_space(self.config, trial)
        overrides = [format_override(k, v) for k, v in trial.params.items()]
        overrides += [f"{k}={v}" for k, v in fixed.items() if k not in trial.params]
        twin = next((t for t in trained if t.params == trial.params), None)
        if twin is not None:  # a resumed or concurrent invocation proposed a trained point again
            return self._skip_duplicate(study, trial, overrides, twin)
        verdict = self.gate.check(trial, overrides)
        if verdict is None:
            trial.set_user_attr(LAUNCHED_ATTR, True)
            trial.set_user_attr("worker", worker)
            for key, value in worker_marks().items():
                trial.set_user_attr(key, value)
            return Claim("run", trial, overrides)
        # never launched: recorded before the lock is let go
        self._infeasible.add(_key(trial.params))  # so in this invocation, where the budget cannot change
        tell(study, trial, TrialState.PRUNED if verdict.rejected else TrialState.FAIL)  # a grid's last point too
        if not verdict.rejected:
            self.gate.check_base_config([f"{k}={v}" for k, v in fixed.items()], verdict.message)
        return Claim("skip", trial, overrides, verdict)

    def _settle_cut_short(self, study: optuna.Study) -> None:
        """Fail, as never launched, the trial of a claim that never reached its caller if it is still RUNNING:
        a database outage cut that claim short (its marks half written, or its answer or the lock's release
        lost) and it is being claimed again. Nothing trains that trial, and its worker is this live process,
        so no liveness check would ever fail it: every worker would wait on it for ever. (``__call__`` lets go
        of the trial once a claim reaches its caller.)"""
        if self._cut_short is None:
            return
        frozen = study._storage.get_trial(self._cut_short._trial_id)
        if frozen.state == TrialState.RUNNING:
            fail_never_launched(study, frozen, {LAUNCHED_ATTR: False})

    @staticmethod
    def _skip_duplicate(study: optuna.Study, trial: optuna.Trial, overrides: List[str], twin: FrozenTrial) -> Claim:
        """Recorded (FAIL, rejected=duplicate), never launched, not counted; the sampler's RNG moves on."""
        reason = f"the same parameters as trial {twin.number}"
        trial.set_user_attr(OVERRIDES_ATTR, overrides)
        trial.set_user_attr("rejected", DUPLICATE)
        trial.set_user_attr("reason", reason)
        tell(study, trial, TrialState.FAIL)
        study.sampler.reseed_rng()
        return Claim("skip", trial, overrides, Verdict(False, None, reason, duplicate=True))

    def _enough_complete(self, trained: Sequence[FrozenTrial]) -> bool:
        """n_complete_trials reached, or within reach of the trials still running (they may yet complete)."""
        if self.n_complete_trials is None:
            return False
        busy = sum(t.state in (TrialState.COMPLETE, TrialState.RUNNING) for t in trained)
        return busy >= self.n_complete_trials

    def _grid_done(self, trials: Sequence[FrozenTrial]) -> bool:
        """A grid sampler's every point has had its trial (run, rejected or failed; not lost to a dead worker)."""
        if self.grid_size is None:
            return False
        used = [t for t in trials if not (t.state == TrialState.FAIL and t.user_attrs.get(LOST_WORKER_ATTR))
                and t.state != TrialState.WAITING]
        return len(used) >= self.grid_size

    def _check_failures(self, trials: Sequence[FrozenTrial]) -> bool:
        """Raise when failed trained trials exceed max_failure_rate; True (the sweep ends) when they number n_trials.

        The cap ends a sweep whose every job fails even under max_failure_rate=1.0, which lets
        failures through but would otherwise ask for new trials forever.
        """
        launched = [t for t in trials if t.user_attrs.get(LAUNCHED_ATTR) and t.state.is_finished()
                    and not t.user_attrs.get(LOST_WORKER_ATTR)  # a killed worker is not the trial's failure
                    and not t.user_attrs.get(INTERRUPTED_ATTR)]  # nor is an interrupt
        failed = [t for t in launched if t.state == TrialState.FAIL]
        if not failed:
            return False
        last = f"last: trial {failed[-1].number}: {failed[-1].user_attrs.get(ERROR_ATTR, 'no message')}"
        if len(failed) / len(launched) > self.max_failure_rate:
            raise SweepError(f"{len(failed)} of {len(launched)} trained trials failed, over "
                             f"max_failure_rate={self.max_failure_rate} ({last})")
        if len(failed) < self.n_trials:
            return False
        if not self._capped_said:
            log.warning("%d trained trials failed, as many as n_trials=%d: the sweep ends (%s)", len(failed),
                        self.n_trials, last)
            self._capped_said = True
        return True
