"""Heartbeats of running trials, and failing the trials whose worker died.

Storage-agnostic (SQLite, PostgreSQL, journal file, in-memory): a running trial's worker writes
the time into a system attribute every ``interval`` seconds; a RUNNING trial whose last sign of
life (heartbeat or start) is older than ``grace_period`` belonged to a killed worker. It is
marked FAIL, and, if asked, re-queued with the same parameters.
"""

import contextlib
import logging
import threading
import time
from typing import Any, Dict, Iterator, List, Optional

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from .repeats import carried_over

log = logging.getLogger(__name__)

HEARTBEAT_ATTR = "heartbeat"
LOST_WORKER_ATTR = "lost_worker"  # failed because its worker died: not the trial's fault


@contextlib.contextmanager
def heartbeat(study: optuna.Study, trial_id: int, interval: float) -> Iterator[None]:
    """Record a heartbeat for the trial every ``interval`` seconds while the block runs."""
    storage = study._storage
    stop = threading.Event()

    def beat() -> None:
        while True:
            try:
                storage.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
            except UpdateFinishedTrialError:
                return
            except Exception as exc:  # a database hiccup must not kill the training
                log.warning("heartbeat of trial id %d failed: %s", trial_id, exc)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def last_sign_of_life(trial: optuna.trial.FrozenTrial) -> float:
    start = trial.datetime_start.timestamp() if trial.datetime_start else 0.0
    return max(start, float(trial.system_attrs.get(HEARTBEAT_ATTR, 0.0)))


def mark_failed(study: optuna.Study, trial: optuna.trial.FrozenTrial, error: str, attrs: Optional[dict] = None) -> bool:
    """Fail a RUNNING trial with its reason; False when it finished, or another worker failed it, first."""
    storage = study._storage
    try:  # the attributes first: a finished trial's cannot change
        for key, value in {**(attrs or {}), "error": error}.items():
            storage.set_trial_user_attr(trial._trial_id, key, value)
        return storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL) is not False
    except UpdateFinishedTrialError:
        return False


def fail_stale_trials(study: optuna.Study, grace_period: float, retry: bool) -> List[int]:
    """Mark FAIL the RUNNING trials silent for longer than ``grace_period``; returns their numbers."""
    now = time.time()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if now - last_sign_of_life(trial) <= grace_period:
            continue
        error = f"no heartbeat for over {grace_period:.0f}s: its worker was killed or lost"
        if not mark_failed(study, trial, error, {LOST_WORKER_ATTR: True}):
            continue
        failed.append(trial.number)
        log.warning("trial %d had no heartbeat for %.0fs: marked failed", trial.number, now - last_sign_of_life(trial))
        if retry and trial.user_attrs.get("launched"):
            carried = requeue(study, trial, {"retry_of": trial.number})
            log.info("trial %d re-queued with the same parameters%s", trial.number,
                     f" and its {carried} finished repeats" if carried else "")
    return failed


def requeue(study: optuna.Study, trial: optuna.trial.FrozenTrial, attrs: Optional[Dict[str, Any]] = None,
            only_with_repeats: bool = False) -> int:
    """Queue a failed trial's point again, with ``attrs`` and its finished repeats, so a resume runs only those left.

    Returns how many repeats it carries. ``only_with_repeats``: queue nothing when it carries none."""
    carried = carried_over(study._storage.get_trial(trial._trial_id))
    if carried or not only_with_repeats:
        study.enqueue_trial(dict(trial.params), user_attrs={**(attrs or {}), **carried}, skip_if_exists=False)
    return len(carried.get("repeat_values", ()))


def fail_unlaunched_trials(study: optuna.Study) -> List[int]:
    """Mark FAIL the RUNNING trials that were asked for but never launched; returns their numbers.

    Call it under the claim lock only. A claim (ask, budget check, "launched" mark, or the
    rejection's tell) runs whole under that lock, so a RUNNING trial without the mark seen there
    is left from a claim the database dropped half-way (an outage between the ask and the mark).
    Nothing was trained for it, so it counts neither toward n_trials nor toward the failure rate.
    """
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get("launched"):
            continue
        if mark_failed(study, trial, "never launched: the database went away while it was being claimed"):
            failed.append(trial.number)
            log.warning("trial %d was claimed but never launched (database outage): marked failed", trial.number)
    return failed
