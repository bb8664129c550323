"""Running one claimed trial: its job (or one job per repeat), heartbeats meanwhile, then its outcome told.

COMPLETE with the (aggregated) values, PRUNED (by the pruner through ``sweeper.api``, or raced
out between repeats), or FAIL with the reason. What each repeat gave is stored on the trial as
soon as it finishes, so an interrupt loses only the repeat that was running.
"""

import contextlib
import logging
import os
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import optuna
from hydra.core.utils import JobStatus
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from .callbacks import notify
from .checkpoints import KEPT_ATTR, clear_unrecorded, later_of, remove, trial_folder, unrecorded
from .checkpoints import record as checkpoint_record
from .errors import SweepError
from .liveness import heartbeat
from .outcome import job_outcome, returned_metrics
from .repeats import (
    AGGREGATE_ATTR, CARRIED_STEPS_ATTR, CONTINUES_ATTR, RACED_OUT_ATTR, REPEAT_ATTR, REPEAT_ATTRS_ATTR, REPEAT_KEY_ATTR,
    REPEAT_SECONDS_ATTR, REPEAT_VALUES_ATTR, REPEATS_N_ATTR, REPEATS_RUN_ATTR, Repeats, first_values, shown,
    stored_values,
)
from .interrupts import check_interrupt, job_running
from .samplers import tell
from .storage import claim_lock, retry_transient
from .summary_lines import log_trial
from .tracebacks import ERROR_LOG_ATTR, TRACEBACK_ATTR, kept, tail
from .trials import ERROR_ATTR, METRICS_ATTR, SWEEPER_ATTRS
from .workers import job_overrides

log = logging.getLogger("sweeper.optuna_sweeper")


def incumbent(study: optuna.Study, direction: str) -> Optional[float]:
    """The best completed trial's value, or None before any completed."""
    values = [t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not values:
        return None
    return max(values) if direction == "maximize" else min(values)


class TrialRun:
    def __init__(self, sweeper: Any, study: optuna.Study, trial: optuna.Trial, overrides: List[str]):
        self.sweeper, self.study, self.trial, self.overrides = sweeper, study, trial, overrides
        self.repeats: Repeats = sweeper.repeats
        self.patience = sweeper.storage_patience

    def _retry(self, fn, what: str):
        return retry_transient(fn, f"{what} trial {self.trial.number}", self.patience)

    def __call__(self) -> None:
        started = time.perf_counter()
        attrs = self._retry(lambda: self.study._storage.get_trial(self.trial._trial_id).user_attrs, "reading")
        per_repeat, seconds, snapshots = stored_values(attrs), list(attrs.get(REPEAT_SECONDS_ATTR) or []), \
            list(attrs.get(REPEAT_ATTRS_ATTR) or [])
        if self.repeats.active:
            self._start_repeats(per_repeat)
        self._carry_on(attrs, per_repeat)
        self.continues = attrs.get(CONTINUES_ATTR)
        state, values, error, failure = TrialState.FAIL, None, None, (None, None)
        for k in range(len(per_repeat), self.repeats.n):
            check_interrupt()  # a signal noted since the claim or the last repeat: stop here, finished repeats kept
            if self._raced_out(per_repeat):
                state, values = TrialState.PRUNED, None
                break
            ret, attrs, took = self._launch(k)
            state, values, error = job_outcome(ret, attrs, self.sweeper.objectives, len(self.sweeper.directions))
            if ret.status != JobStatus.FAILED:
                attrs = self._keep_metrics(ret.return_value, attrs)
            if ret.status == JobStatus.FAILED:
                failure = kept(ret._return_value)  # the job's traceback and its error.log (tracebacks.py)
            if state != TrialState.COMPLETE or not self.repeats.active:
                break
            per_repeat.append(values)
            seconds.append(took)
            snapshots.append({key: v for key, v in attrs.items() if key not in SWEEPER_ATTRS})
            self._store_repeats(per_repeat, seconds, snapshots)
            if k + 1 < self.repeats.n:
                self._drop_checkpoint(attrs)  # the next repeat starts from its first step
        else:
            if self.repeats.active and per_repeat:
                state, values = TrialState.COMPLETE, self.repeats.aggregated(per_repeat)
        self._tell(state, values, error, time.perf_counter() - started, attrs, failure)

    def _raced_out(self, per_repeat: List[List[float]]) -> bool:
        """Racing's verdict before the next repeat; a trial raced out is marked so (and said in one line)."""
        if not self.repeats.race or not per_repeat:
            return False
        direction = self.sweeper.directions[0]  # racing needs one objective (checked at start)
        best = self._retry(lambda: incumbent(self.study, direction), "reading the best before racing")
        so_far = first_values(per_repeat)
        if not self.repeats.raced_out(so_far, best, direction):
            return False
        self._retry(lambda: self.trial.set_user_attr(RACED_OUT_ATTR, len(per_repeat)), "recording")
        log.info("trial %d raced out after %d of %d repeats: %s %s cannot reach the best %.4g", self.trial.number,
                 len(per_repeat), self.repeats.n, self.repeats.aggregate, so_far, best)
        return True

    def _start_repeats(self, per_repeat: List[List[float]]) -> None:
        """Mark the trial as repeated."""
        def mark() -> None:
            self.trial.set_user_attr(REPEATS_N_ATTR, self.repeats.n)
            self.trial.set_user_attr(REPEAT_KEY_ATTR, self.repeats.key)
            self.trial.set_user_attr(AGGREGATE_ATTR, self.repeats.aggregate)
            self.trial.set_user_attr(REPEATS_RUN_ATTR, len(per_repeat))

        self._retry(mark, "starting the repeats of")

    def _carry_on(self, attrs: Dict[str, Any], per_repeat: List[List[float]]) -> None:
        """A trial that runs a stopped trial's point again replays its per-step reports (those its job will not
        report again: up to its checkpoint), so the pruner sees one history, and says what it carries on from."""
        source = attrs.get(CONTINUES_ATTR)
        if source is None:
            return
        steps = attrs.get(CARRIED_STEPS_ATTR) or []
        if self.sweeper.prunes and steps:
            def replay() -> None:
                reported = self.study._storage.get_trial(self.trial._trial_id).intermediate_values
                for step, value in steps:
                    if step not in reported:
                        self.trial.report(value, step)

            self._retry(replay, "replaying the reports of")
        done = [f"{len(per_repeat)} of {self.repeats.n} repeats done {shown(per_repeat)}"] if per_repeat else []
        rec = checkpoint_record(attrs)
        if rec is not None:
            which = f"repeat {int(rec.get('repeat', 0))}" if self.repeats.active else "its job"
            done.append(f"{which} resumes from its checkpoint of step {rec['step']}")
        log.info("trial %d carries on from trial %s: %s", self.trial.number, source, "; ".join(done) or "its point")

    def _drop_checkpoint(self, attrs: Dict[str, Any], kept: Optional[Dict[str, Any]] = None,
                         noted: Optional[Dict[str, Any]] = None) -> None:
        """Remove the trial's checkpoints (and the folder of the trial it carried on from), but ``kept``;
        ``noted``: the note of one saved while the database was away (``checkpoints.unrecorded``), removed too."""
        where, name = self.sweeper.checkpoints, self.study.study_name
        folders = [trial_folder(where, name, n) for n in (self.trial.number, self.continues) if n is not None]
        if kept is not None:
            folders = [f for f in folders if not kept["id"].startswith(f + "/")]
            for rec in (checkpoint_record(attrs), noted):
                if rec is not None and rec["id"] != kept["id"]:
                    remove(where, rec)
            clear_unrecorded(where, name, self.trial.number)
            remove(where, None, folders)
        else:
            remove(where, checkpoint_record(attrs), folders)

    def _keep_best_checkpoint(self, rec: Optional[Dict[str, Any]]) -> bool:
        """With ``checkpoint.keep_best``: whether this complete trial's last checkpoint ``rec`` is kept (it is
        among the best); kept checkpoints of trials no longer among the best are removed. The study lists those kept."""
        if not self.sweeper.checkpoint_cfg.get("keep_best") or rec is None:
            return False
        study, where = self.study, self.sweeper.checkpoints
        with claim_lock(self.sweeper.storage_url):
            best = {t.number for t in study.best_trials}
            kept = dict(study._storage.get_study_system_attrs(study._study_id).get(KEPT_ATTR) or {})
            for number in [n for n in kept if int(n) not in best]:
                remove(where, kept.pop(number), [trial_folder(where, study.study_name, int(number))])
            if self.trial.number in best:
                kept[str(self.trial.number)] = rec
            study._storage.set_study_system_attr(study._study_id, KEPT_ATTR, kept)
        return self.trial.number in best

    def _launch(self, k: int) -> Tuple[Any, Dict[str, Any], float]:
        """Run repeat ``k`` (or the one job) under heartbeats; the job's return and the trial's attributes then."""
        sweeper, trial = self.sweeper, self.trial
        if self.repeats.active:
            self._retry(lambda: trial.set_user_attr(REPEAT_ATTR, k), "marking the repeat of")
        started = time.perf_counter()
        try:
            with heartbeat(self.study, trial._trial_id, sweeper.heartbeat_interval):
                job = job_overrides(self.repeats.job_overrides(self.overrides, k), sweeper.threads_key,
                                    sweeper.threads_per_job, sweeper.n_jobs)
                with contextlib.nullcontext() if sweeper.in_process_jobs else job_running():
                    ret = sweeper.launcher.launch([job], initial_job_idx=trial.number)[0]
        except OSError as exc:  # the job's folder cannot be written (unwritable or full disk): every trial would fail
            message = f"cannot write the job's output folder under {sweeper.config.hydra.sweep.dir}: {exc.strerror or exc}"

            def record_failure() -> None:
                trial.set_user_attr(ERROR_ATTR, message)
                self.study.tell(trial, TrialState.FAIL, skip_if_finished=True)

            self._retry(record_failure, "recording")
            raise SweepError(message + "; the trial is recorded failed, finished trials are kept") from None
        took = time.perf_counter() - started
        attrs = self._retry(lambda: self.study._storage.get_trial(trial._trial_id).user_attrs, "reading")
        return ret, attrs, took

    def _keep_metrics(self, returned: Any, attrs: Dict[str, Any]) -> Dict[str, Any]:
        """The job's metrics on the trial: the numbers it returned by name (this repeat's, where it stored
        others itself), and the names of all it gives (``hydra.sweeper.metrics``, else the returned names)
        for the table."""
        given = returned_metrics(returned, self.sweeper.metrics)
        new = {k: v for k, v in given.items() if attrs.get(k) != v}
        names = self.sweeper.metrics or list(given)
        if names and attrs.get(METRICS_ATTR) != names:
            new[METRICS_ATTR] = names
        if new:
            self._retry(lambda: [self.trial.set_user_attr(k, v) for k, v in new.items()], "recording the metrics of")
        return {**attrs, **new}

    def _store_repeats(self, per_repeat: List[List[float]], seconds: List[float], snapshots: List[Dict]) -> None:
        def store() -> None:
            self.trial.set_user_attr(REPEAT_VALUES_ATTR, shown(per_repeat))
            self.trial.set_user_attr(REPEAT_SECONDS_ATTR, seconds)
            self.trial.set_user_attr(REPEAT_ATTRS_ATTR, snapshots)
            self.trial.set_user_attr(REPEATS_RUN_ATTR, len(per_repeat))

        self._retry(store, "recording a repeat of")
        if len(per_repeat) < self.repeats.n:
            log.info("trial %d repeat %d of %d (%s=%s): %s", self.trial.number, len(per_repeat), self.repeats.n,
                     self.repeats.key, self.repeats.values[len(per_repeat) - 1], "/".join(f"{v:.4g}" for v in per_repeat[-1]))

    def _tell(self, state: TrialState, values: Optional[List[float]], error: Optional[str], seconds: float,
              attrs: Dict[str, Any], failure: Tuple[Optional[str], Optional[str]] = (None, None)) -> None:
        trial, study = self.trial, self.study
        text, path = failure
        if error and path:
            error = f"{error} (traceback: {path})"
        if text and os.environ.get("HYDRA_FULL_ERROR") == "1":
            sys.stderr.write(f"trial {trial.number}: the job failed:\n{text}")

        # reports its job made while the database was away, noted beside its checkpoints: the curve has no gap
        noted = unrecorded(self.sweeper.checkpoints, study.study_name, trial.number)

        def record() -> None:
            if noted is not None:
                reported = study._storage.get_trial(trial._trial_id).intermediate_values
                for step, value in noted["reports"]:
                    if int(step) not in reported:
                        trial.report(float(value), int(step))
            if error:
                trial.set_user_attr(ERROR_ATTR, error)
            if text:
                trial.set_user_attr(TRACEBACK_ATTR, tail(text))
                if path:
                    trial.set_user_attr(ERROR_LOG_ATTR, path)
            trial.set_user_attr("sweep_seconds", seconds)
            tell(study, trial, state, values)  # GridSampler stops the study when the grid is done

        try:
            self._retry(record, "recording")
        except UpdateFinishedTrialError:
            # Another worker failed it as stale while its heartbeats could not reach the database
            # (an outage longer than grace_period). It stays failed; its job folder has the results.
            log.warning("trial %d was marked failed by another worker during a database outage; its result is "
                        "not recorded (see %s)", trial.number, attrs.get("output_dir", "its job folder"))
            return
        last = later_of(checkpoint_record(attrs), noted)
        keep = state == TrialState.COMPLETE and self._retry(lambda: self._keep_best_checkpoint(last), "keeping the checkpoint of")
        self._drop_checkpoint(attrs, kept=last if keep else None, noted=noted)
        self._retry(lambda: log_trial(self.sweeper, study, trial.number, state, values, attrs, seconds, error),
                    "reading the study after")
        notify(self.sweeper.callbacks, study, trial._trial_id)

