"""Heartbeats of running trials, and failing the trials whose worker died.

Storage-agnostic (SQLite, PostgreSQL, journal file, in-memory): a running trial's worker writes
the time into a system attribute every ``interval`` seconds, and its claim records the worker
process (``host_pid``, and on Linux the process's start time, so a reused pid is not taken for it).
A RUNNING trial is lost when

- its worker ran on this host and that process is gone: known at once, whatever the grace period;
- its worker runs elsewhere (or where processes cannot be looked up) and its last sign of life
  (heartbeat or start) is older than ``grace_period``.

A worker process alive on this host is never failed for a late heartbeat: on a loaded machine
a heartbeat can wait behind SQLite's write lock for longer than any sensible grace period.
A lost trial is marked FAIL, and, if asked, re-queued with the same parameters.
"""

import contextlib
import logging
import os
import socket
import threading
import time
from typing import Any, Dict, Iterator, List, Optional

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from .checkpoints import (
    CHECKPOINT_ATTR, carried_over, record, remove, stopped_by_sweep, trial_folder, unrecorded,
)
from .interrupts import INTERRUPTED_ATTR
from .repeats import REPEAT_VALUES_ATTR
from .trials import LAUNCHED_ATTR, RETRY_OF_ATTR

log = logging.getLogger(__name__)

HEARTBEAT_ATTR = "heartbeat"
LOST_WORKER_ATTR = "lost_worker"  # failed because its worker died: not the trial's fault
HOST_PID_ATTR = "host_pid"  # "<host>:<pid>" of the worker process that claimed the trial
WORKER_STARTED_ATTR = "worker_started"  # that process's start time (Linux clock ticks since boot), when known
NEVER_LAUNCHED = "never launched: the database went away while it was being claimed"  # a cut-short claim's trial


def process_started(pid: int) -> Optional[str]:
    """When process ``pid`` started (field 22 of /proc/<pid>/stat), or None where it is gone or unknowable.

    A zombie (killed, not yet reaped by its parent) is gone: its trial must not wait for the reaping.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return None if fields[0] in ("Z", "X") else fields[19]
    except (OSError, IndexError):
        return None


def worker_marks() -> Dict[str, str]:
    """What a claim records about the process that will run the trial."""
    marks = {HOST_PID_ATTR: f"{socket.gethostname()}:{os.getpid()}"}
    started = process_started(os.getpid())
    if started is not None:
        marks[WORKER_STARTED_ATTR] = started
    return marks


def local_worker_alive(trial: optuna.trial.FrozenTrial) -> Optional[bool]:
    """True: the trial's worker process runs on this host; False: it ran here and is gone;
    None: it runs on another host, or this host cannot tell (no /proc), or the claim recorded none."""
    host, _, pid = str(trial.user_attrs.get(HOST_PID_ATTR, "")).rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or process_started(os.getpid()) is None:
        return None
    started = process_started(int(pid))
    recorded = trial.user_attrs.get(WORKER_STARTED_ATTR)
    return started is not None and (recorded is None or recorded == started)


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


def fail_stale_trials(study: optuna.Study, grace_period: float, retry: bool, checkpoints: Any = None) -> List[int]:
    """Mark FAIL the RUNNING trials whose worker is lost (module docstring); returns their numbers."""
    now = time.time()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):  # pragma: no mutate (only read)
        alive = local_worker_alive(trial)
        silent = now - last_sign_of_life(trial)
        if alive or (alive is None and silent <= grace_period):
            continue
        stopped = checkpoints is not None and stopped_by_sweep(checkpoints, study.study_name, trial.number)
        if stopped:  # its sweep stopped for a database outage and could not record it (checkpoints.mark_stopped)
            error, attrs = "stopped by its sweep while the database was away", {INTERRUPTED_ATTR: True}
        elif alive is False:
            error = f"its worker process ({trial.user_attrs[HOST_PID_ATTR]}) is gone: it was killed or lost"
            attrs = {LOST_WORKER_ATTR: True}
        else:
            error, attrs = f"no heartbeat for over {grace_period:.0f}s: its worker was killed or lost", {LOST_WORKER_ATTR: True}
        if not mark_failed(study, trial, error, attrs):
            continue
        failed.append(trial.number)
        log.warning("trial %d: %s; marked failed", trial.number,
                    error if alive is False or stopped else f"no heartbeat for {silent:.0f}s")
        if (retry or stopped) and trial.user_attrs.get(LAUNCHED_ATTR):
            carried = what_carries_on(requeue(study, trial, {RETRY_OF_ATTR: trial.number}, checkpoints=checkpoints))
            log.info("trial %d re-queued with the same parameters%s", trial.number, f" and {carried}" if carried else "")
        elif checkpoints is not None:  # not run again: its checkpoint would only take disk
            remove(checkpoints, record(trial.user_attrs), [trial_folder(checkpoints, study.study_name, trial.number)])
    return failed


def requeue(study: optuna.Study, trial: optuna.trial.FrozenTrial, attrs: Optional[Dict[str, Any]] = None,
            only_if_carried: bool = False, checkpoints: Any = None) -> Optional[Dict[str, Any]]:
    """Queue a failed trial's point again, with ``attrs``, its finished repeats and its checkpoint, so the
    resume runs only the repeats left, the stopped one from its checkpoint (``checkpoints.carried_over``;
    given the store, ``checkpoints``, a later one its job saved while the database was away).

    Returns what the queued trial carries ({} for its point alone), or None when nothing was queued
    (``only_if_carried`` and it carries nothing)."""
    noted = unrecorded(checkpoints, study.study_name, trial.number) if checkpoints is not None else None
    carried = carried_over(study._storage.get_trial(trial._trial_id), noted)
    if not carried and only_if_carried:
        return None
    study.enqueue_trial(dict(trial.params), user_attrs={**(attrs or {}), **carried}, skip_if_exists=False)
    return carried


def what_carries_on(carried: Dict[str, Any]) -> str:
    """What a queued trial carries, in words: "" for its point alone."""
    parts = []
    done = len(carried.get(REPEAT_VALUES_ATTR) or ())
    if done:
        parts.append(f"its {done} finished repeat{'s' if done > 1 else ''}")
    if carried.get(CHECKPOINT_ATTR):
        parts.append(f"its checkpoint of step {carried[CHECKPOINT_ATTR]['step']}")
    return " and ".join(parts)


def record_interrupted(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
    """Fail a RUNNING trial as interrupted (not its own failure) and queue its point to run again first,
    with its checkpoint and finished repeats, where it was launched or carries something on.
    False when it had finished, or another worker failed it, first."""
    if not mark_failed(study, trial, "interrupted", {INTERRUPTED_ATTR: True}):
        return False
    requeue(study, trial, {RETRY_OF_ATTR: trial.number},
            only_if_carried=not (trial.user_attrs.get(LAUNCHED_ATTR) or RETRY_OF_ATTR in trial.user_attrs))
    return True


def settle_stopped_workers(study: optuna.Study, pids: List[int]) -> List[int]:
    """After this sweep's worker processes ``pids`` were stopped and waited for: record interrupted any
    trial still RUNNING under one of them, or asked for and never launched; returns their numbers.

    A worker records its own trial when it is stopped; one that could not (killed at the end of
    ``stop_workers``' wait, or cut short between its claim and its job) would otherwise leave its
    trial RUNNING until a later invocation found its process gone. With no workers (``pids`` empty) it
    records only what a claim cut short left: by this process's interrupt, inside the ask. Call it
    under the claim lock only.
    """
    ours = {f"{socket.gethostname()}:{pid}" for pid in pids}
    settled = fail_unlaunched_trials(study, interrupted=True)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):  # pragma: no mutate (only read)
        if trial.user_attrs.get(HOST_PID_ATTR) in ours and record_interrupted(study, trial):
            log.warning("trial %d: its worker (%s) ended without recording the interrupt; recorded now",
                        trial.number, trial.user_attrs[HOST_PID_ATTR])
            settled.append(trial.number)
    return settled


def fail_unlaunched_trials(study: optuna.Study, interrupted: bool = False) -> List[int]:
    """Mark FAIL the RUNNING trials that were asked for but never launched; returns their numbers.

    Call it under the claim lock only. A claim (ask, budget check, "launched" mark, or the
    rejection's tell) runs whole under that lock, and every claim first calls this, so a RUNNING
    trial without the mark seen there is left from a claim cut short since: by a database outage
    (between the ask and the mark), or, ``interrupted``, by the interrupt this process is
    recording (it may have struck inside the ask itself, before the claim step saw its trial).
    Nothing was trained for it, so it counts neither toward n_trials nor toward the failure rate.
    """
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):  # pragma: no mutate (only read)
        if trial.user_attrs.get(LAUNCHED_ATTR):
            continue
        if interrupted:
            if mark_failed(study, trial, "interrupted", {INTERRUPTED_ATTR: True}):
                failed.append(trial.number)
        elif fail_never_launched(study, trial):
            failed.append(trial.number)
    return failed


def fail_never_launched(study: optuna.Study, trial: optuna.trial.FrozenTrial, attrs: Optional[dict] = None) -> bool:
    """Fail a RUNNING trial a database outage cut its claim short on, and say so; False when it had finished."""
    if not mark_failed(study, trial, NEVER_LAUNCHED, attrs):
        return False
    log.warning("trial %d was claimed but never launched (database outage): marked failed", trial.number)
    return True
