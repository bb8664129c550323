"""A Hydra sweeper on current Optuna: asks, gates, launches and tells, one trial at a time per worker.

One worker's loop (every worker, in this process or another, on this machine or another, runs
the same loop against the shared storage; ``n_jobs`` starts that many on this machine):

    under the study's claim lock:
        fail trials whose worker stopped sending heartbeats (optionally re-queue them)
        stop if the study holds n_trials trained trials (finished or running), or its grid is done
        ask Optuna for a trial -> Hydra overrides -> the budget gate (compose, measure; no training)
        over budget: recorded (PRUNED, rejected=over_budget), never launched, does not count
        unbuildable: recorded FAIL with its message, never launched
        otherwise: claimed (launched=True)
    launch the job (Hydra's launcher), heartbeating meanwhile; with repeats, one job per seed,
        stopping early once the trial can no longer reach the best (racing)
    tell the outcome: COMPLETE, PRUNED (pruned through sweeper.api, or raced out), or FAIL

So a finished trial's slot is refilled at once (no batch waits for its slowest trial), a killed
sweep resumes where it stopped when the same command runs again, and n_trials is the study's
total of trained trials, whatever the number of invocations.
"""

import contextlib
import logging
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional

import optuna
from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.object_type import ObjectType
from hydra.core.plugins import Plugins
from hydra.errors import OverrideParseException
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, ListConfig, OmegaConf
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState
from sqlalchemy.exc import DBAPIError

from .api import ACTIVE_STUDIES, study_name
from .budget import BudgetGate
from .callbacks import make_callbacks, notify
from .checkpoints import CheckpointStoreError, check_store, location, mark_stopped
from .checks import check_objectives, check_settings
from .claim import ClaimStep
from .errors import SweepError, one_line, squashed
from .export import record_app_config
from .interrupts import (
    INTERRUPTED_ATTR, Interrupted, check_interrupt, exit_code, interruptible, interrupts_ignored, interruptible_task,
)
from .liveness import LOST_WORKER_ATTR, record_interrupted, settle_stopped_workers, what_carries_on
from .locate import locate_callable
from .repeats import Repeats
from .samplers import check_sampler_needs, grid_size, make_pruner, make_sampler, same_start
from .search_space import (
    SearchSpaceError, check_group_choices, check_keys_exist, nearest_key, space_size, sweep_space,
)
from .storage import (
    StorageError, check_search_space, check_url, claim_lock, load_or_create_study, local_file, masked, open_storage,
    refuse_written_password, retry_transient, scrubbed,
)
from .summary_lines import log_header, write_results
from .tracebacks import KeepTraceback
from .trial_run import TrialRun
from .trials import LAUNCHED_ATTR, RETRY_OF_ATTR, budget_constraint, is_trained
from .workers import start_workers, stop_workers, worker_index

log = logging.getLogger(__name__)
# How often a worker with nothing to claim looks again while others' trials run (the last ones of a sweep):
# the sweep ends about this long after its last trial at most
WAIT_POLL_SECONDS = 1.0



class OptunaBudgetSweeper:
    def __init__(self, sampler: DictConfig, pruner: DictConfig, direction: Any, storage: Optional[str],
                 study_name: Optional[str], n_trials: int, n_jobs: int, max_failure_rate: float,
                 search_space: Optional[DictConfig], params: Optional[DictConfig], custom_search_space: Optional[str],
                 objectives: Optional[List[str]], metrics: Optional[List[str]], budget: DictConfig, threads_key: Optional[str],
                 allow_search_space_change: bool, max_rejected_streak: int, heartbeat_interval: int,
                 grace_period: int, retry_stale_trials: bool, threads_per_job: Optional[int],
                 storage_patience: int, repeats: DictConfig, n_complete_trials: Optional[int],
                 callbacks: Optional[List[Any]] = None, checkpoint: Optional[DictConfig] = None) -> None:
        self.sampler_cfg, self.pruner_cfg = sampler, pruner
        directions = list(direction) if isinstance(direction, (list, ListConfig)) else [direction]
        self.directions = [str(getattr(d, "name", d)).lower() for d in directions]
        for d in self.directions:
            if d not in ("maximize", "minimize"):
                raise SweepError(f"hydra.sweeper.direction={d!r} is not one of: maximize, minimize")
        check_settings(dict(n_trials=n_trials, n_jobs=n_jobs, max_failure_rate=max_failure_rate,
                            max_rejected_streak=max_rejected_streak, heartbeat_interval=heartbeat_interval,
                            storage_patience=storage_patience, grace_period=grace_period, study_name=study_name,
                            n_complete_trials=n_complete_trials))
        self.objectives = [str(o) for o in objectives] if objectives else None
        check_objectives(self.objectives, metrics, self.directions)
        self.metrics = [str(m) for m in metrics] if metrics else None
        try:
            check_url(storage)
        except StorageError as exc:
            raise SweepError(str(exc)) from None
        if n_jobs > 1 and storage is None:
            log.warning("hydra.sweeper.n_jobs=%d with an in-memory storage (storage: null): worker processes cannot "
                        "share it, so one worker runs the trials; set hydra.sweeper.storage to run them in parallel",
                        n_jobs)
            n_jobs = 1
        self.storage_url, self.configured_study_name = storage, study_name
        self.n_trials, self.n_jobs, self.max_failure_rate = n_trials, n_jobs, max_failure_rate
        self.search_space_cfg, self.params = search_space, params
        self.custom_search_space_path = custom_search_space
        self.budget_cfg, self.threads_key = budget, threads_key
        self.allow_search_space_change = allow_search_space_change
        self.max_rejected_streak = max_rejected_streak
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period
        self.retry_stale_trials, self.threads_per_job = retry_stale_trials, threads_per_job
        self.storage_patience = storage_patience
        self.repeats_cfg, self.n_complete_trials = repeats, n_complete_trials
        self.callbacks = make_callbacks(callbacks)
        self.checkpoint_cfg = checkpoint if checkpoint is not None else OmegaConf.create({"store": None, "keep_best": False})
        self.checkpoints = location(self.checkpoint_cfg.get("store"), storage)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.task_module = getattr(task_function, "__module__", None)
        self.custom_search_space = None
        if self.custom_search_space_path:
            try:
                self.custom_search_space = locate_callable(self.custom_search_space_path, task_function)
            except Exception as exc:
                raise SweepError(f"hydra.sweeper.custom_search_space={self.custom_search_space_path!r} cannot be "
                                 f"imported: {one_line(exc)}") from None
        try:  # as written, before interpolation: a URL from the environment is not written to disk
            refuse_written_password(OmegaConf.to_container(config.hydra.sweeper, resolve=False).get("storage"))
        except StorageError as exc:
            raise SweepError(str(exc)) from None
        self.study_name = study_name(self.configured_study_name, config.hydra.job.name)
        job_task = KeepTraceback(task_function)  # a failing job's traceback is kept (tracebacks.py)
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=job_task, config=config
        )
        # An interrupt stops the job at once only inside the app's own code: Hydra's set-up of a job
        # (OmegaConf merges) turns an exception raised in its middle into a config error. Jobs that run in
        # this process get that window exactly; another launcher's wait for its jobs is the window instead.
        self.in_process_jobs = isinstance(self.launcher, BasicLauncher)
        if self.in_process_jobs:
            self.launcher.task_function = interruptible_task(job_task)
        load = lambda overrides: hydra_context.config_loader.load_sweep_config(config, overrides)
        self.gate = BudgetGate(load, self.budget_cfg.get("measure"), self.budget_cfg.get("name") or "budget_value",
                               task_function)

    @property
    def prunes(self) -> bool:
        return len(self.directions) == 1  # Optuna prunes single-objective studies only

    # ----------------------------------------------------------------- set-up of the study

    def _search_space(self, arguments: List[str]):
        try:
            distributions, fixed = sweep_space(self.params, self.search_space_cfg, arguments)
            check_group_choices(distributions, self._group_options)
            check_keys_exist([*distributions, *fixed], self.config, self._group_options)
        except (SearchSpaceError, OverrideParseException) as exc:
            raise SweepError(f"search space: {squashed(exc)}") from None
        if not distributions and self.custom_search_space is None:
            raise SweepError("the search space is empty: give hydra.sweeper.params or sweep overrides such as "
                             "'x=interval(0.01,0.2)'")
        self.repeats = Repeats.from_config(self.repeats_cfg, self.config, fixed, list(distributions), self.directions)
        return distributions, fixed

    def _group_options(self, group: str) -> List[str]:
        """The options of config group ``group`` in the app's config (with its search path); [] if no such group."""
        try:
            return sorted(self.hydra_context.config_loader.get_group_options(
                group, ObjectType.CONFIG, config_name=self.config.hydra.job.config_name))
        except Exception:  # a config source that cannot list groups: the launch will say what is missing
            return []

    def _open_study(self, distributions: Dict[str, BaseDistribution]) -> optuna.Study:
        constraints = budget_constraint if self.gate.active and not hasattr(optuna.trial.Trial, "set_constraint") else None
        pruner = make_pruner(self.pruner_cfg, repeated=self.repeats.active)
        try:
            with claim_lock(self.storage_url):  # processes starting together create tables once
                storage = open_storage(self.storage_url)
                study = load_or_create_study(storage, self.study_name, self.directions, None, pruner)
                check_search_space(study, distributions, self.allow_search_space_change)
                twin = same_start(study, self.sampler_cfg) if worker_index() is None else None
                if twin is not None:
                    log.warning("hydra.sweeper.sampler.seed=%s: study %r in this storage began with this seed and "
                                "search space and a sampler that starts as this one does (TPE, random, NSGA-II/III and "
                                "GP all start from the same random points), so this study's first proposals repeat "
                                "its first trials; give another seed for other points", self.sampler_cfg.get("seed"), twin)
                # The seed moves on with the study, so a resumed or second invocation does not propose
                # the first one's points again; a new study keeps the configured seed (reproducible).
                offset = len(study.get_trials(deepcopy=False)) + (worker_index() or 0)
                study.sampler = make_sampler(self.sampler_cfg, distributions, offset, constraints)
                self.grid_size = grid_size(study.sampler)
                record_app_config(study, self.config, self.task_module)
                if self.objectives and not study.metric_names:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                        study.set_metric_names(self.objectives)
        except StorageError as exc:
            raise SweepError(str(exc)) from None
        except DBAPIError as exc:  # unreachable at start: fail in seconds, do not wait
            raise SweepError(f"storage={masked(self.storage_url)!r} cannot be reached: "
                             f"{scrubbed(squashed(exc.orig, 200), self.storage_url)}") from None
        return study

    # ----------------------------------------------------------------- the sweep

    def sweep(self, arguments: List[str]) -> Any:
        distributions, fixed = self._search_space(arguments)
        check_sampler_needs(self.sampler_cfg)
        study = self._open_study(distributions)
        if self.checkpoint_cfg.get("store") is not None:  # the default is made beside the database when first used
            try:
                check_store(self.checkpoints)
            except CheckpointStoreError as exc:
                raise SweepError(str(exc)) from None
        ACTIVE_STUDIES[(self.storage_url, self.study_name)] = study
        worker = worker_index()
        sweep_dir = str(self.config.hydra.sweep.dir)
        try:
            Path(sweep_dir).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SweepError(f"hydra.sweep.dir={sweep_dir} cannot be created: {exc.strerror or exc}") from None
        if worker is None:
            log_header(self, study, distributions, fixed, local_file(self.storage_url))
        workers = [] if worker is not None else start_workers(self.n_jobs, sweep_dir)
        self._running: Optional[optuna.Trial] = None
        self._claim_step: Optional[ClaimStep] = None
        try:
            with interruptible(takes_sigint=worker is None):
                self._work(study, distributions, fixed, str(worker or 0))
                check_interrupt()
        except (KeyboardInterrupt, Interrupted) as exc:
            self._interrupted(study, workers, worker, exc)
        except BaseException as exc:
            stop_workers(workers)
            if isinstance(exc, StorageError):
                if self._running is not None:  # it cannot be recorded: a note beside its checkpoints says so
                    mark_stopped(self.checkpoints, self.study_name, self._running.number)
                raise SweepError(str(exc)) from None
            raise
        codes = [proc.wait() for proc in workers]
        ACTIVE_STUDIES.pop((self.storage_url, self.study_name), None)
        if worker is None:
            if any(codes):
                log.warning("worker processes exited with codes %s", codes)
            retry_transient(lambda: write_results(self, study, sweep_dir), "reading the results", self.storage_patience)
            self._fail_if_nothing_completed(study)
        return None

    @staticmethod
    def _fail_if_nothing_completed(study: optuna.Study) -> None:
        """A sweep that ends with no completed trial because its trials failed ends non-zero, whatever
        max_failure_rate let through (their tracebacks stay in their error.log files)."""
        trials = study.get_trials(deepcopy=False)  # pragma: no mutate (only read: a copy or not)
        if any(t.state == TrialState.COMPLETE for t in trials):
            return
        failed = [t for t in trials if t.state == TrialState.FAIL and t.user_attrs.get(LAUNCHED_ATTR)
                  and not t.user_attrs.get(INTERRUPTED_ATTR) and not t.user_attrs.get(LOST_WORKER_ATTR)]
        if failed:
            last = failed[-1]
            raise SweepError(f"no trial completed: {len(failed)} trained trial{'s' if len(failed) > 1 else ''} failed "
                             f"(last: trial {last.number}: {last.user_attrs.get('error', 'no message')})")

    def _interrupted(self, study: optuna.Study, workers: List[Any], worker: Optional[int], exc: BaseException) -> None:
        """Record the running trial as interrupted, stop the workers, say so in one line, exit 130 (SIGINT) or 143."""
        with interrupts_ignored():  # the rest is quick; a second signal must not cut it short
            with contextlib.suppress(KeyboardInterrupt, Interrupted):
                # the trial being run, or being claimed (asked, maybe marked launched, not yet running):
                # whatever moment the signal struck, it is recorded interrupted, never left RUNNING
                claimed = self._claim_step.open_trial if self._claim_step is not None else None
                for trial in {t._trial_id: t for t in (self._running, claimed) if t is not None}.values():
                    # its point runs again first, from its checkpoint and with its finished repeats
                    record_interrupted(study, study._storage.get_trial(trial._trial_id))
                stop_workers(workers)  # each records its own trial likewise
                # what a worker could not record, and a claim cut short inside the ask (a trial never seen)
                with claim_lock(self.storage_url):
                    settle_stopped_workers(study, [proc.pid for proc in workers])
                if worker is None:
                    trials = study.get_trials(deepcopy=False)  # pragma: no mutate (only read: a copy or not)
                    kept = sum(is_trained(t) for t in trials)
                    queued = []
                    for t in trials:
                        if t.state == TrialState.WAITING and RETRY_OF_ATTR in t.user_attrs:
                            what = what_carries_on(t.user_attrs)
                            queued.append(f", trial {t.user_attrs[RETRY_OF_ATTR]} queued to run again first"
                                          f"{f' with {what}' if what else ''}")
                    sys.stderr.write(f"interrupted: {kept} trained trials kept{''.join(queued)}; the same command resumes\n")
        sys.exit(exit_code(exc))

    def _work(self, study: optuna.Study, distributions: Dict[str, BaseDistribution], fixed: Dict[str, str],
              worker: str) -> None:
        size = space_size(distributions) if self.custom_search_space is None else None
        claim_next = self._claim_step = ClaimStep(self.storage_url, self.gate, self.n_trials, self.max_failure_rate, self.grace_period,
                               self.retry_stale_trials, self.grid_size, size, self.custom_search_space, self.config,
                               self.n_complete_trials, self.checkpoints)
        streak, smallest_rejected = 0, None
        while True:
            check_interrupt()
            claim = retry_transient(lambda: claim_next(study, distributions, fixed, worker),
                                    "claiming the next trial", self.storage_patience)
            if claim.action == "done":
                return
            if claim.action == "wait":  # others' trials still run: wait for them, or for them to go stale
                time.sleep(min(self.heartbeat_interval, WAIT_POLL_SECONDS))
                continue
            if claim.action == "run":
                streak = 0
                self._running = claim.trial
                TrialRun(self, study, claim.trial, claim.overrides)()
                self._running = claim_next.open_trial = None
                continue
            verdict = claim.verdict
            notify(self.callbacks, study, claim.trial._trial_id)
            said = "rejected" if verdict.rejected else "skipped" if verdict.duplicate else "FAILED (not launched)"
            log.info("trial %d %s: %s", claim.trial.number, said, verdict.message)
            if not (verdict.rejected or verdict.duplicate):
                self._refuse_a_missing_key(verdict.message, [*distributions, *fixed])
            streak += 1
            if verdict.rejected:
                smallest_rejected = min(verdict.value, smallest_rejected or verdict.value)
            if streak >= self.max_rejected_streak:
                if smallest_rejected is None:  # none was over budget: the budget is not what stops them
                    raise SweepError(f"the last {streak} trials could not be built or repeated trained points (last: "
                                     f"trial {claim.trial.number}: {verdict.message}); nothing was trained")
                raise SweepError(
                    f"the last {streak} trials were all over budget, unbuildable or repeats (smallest over-budget "
                    f"{self.gate.name}: {smallest_rejected:,}): the search space seems to be over budget; narrow it "
                    "or raise hydra.sweeper.budget.max"
                )

    def _refuse_a_missing_key(self, message: str, keys: List[str]) -> None:
        """A trial that cannot be built because a key the sweep sets is not in its config: every trial would
        fail alike, so the sweep stops at its first, naming the key and the nearest one the config has.
        (Keys under a config group the sweep chooses are only known once a trial's config is composed.)"""
        match = re.search(r"Could not override '([^']+)'", message)
        if match is None or match.group(1) not in {k.lstrip("+~") for k in keys}:
            return
        key = match.group(1)
        near = nearest_key(key, self.config)
        hint = f"did you mean {near}? " if near else ""
        raise SweepError(f"search space: {key} is not a key of the app's config; {hint}(to add a new key: +{key}=...)")
