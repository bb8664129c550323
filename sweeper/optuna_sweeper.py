"""A Hydra sweeper on current Optuna that rejects over-budget trials before training.

One worker's loop (every worker, in this process or another, on this machine or another, runs
the same loop against the shared storage; ``n_jobs`` starts that many on this machine):

    under the study's claim lock:
        fail trials whose worker stopped sending heartbeats (optionally re-queue them)
        stop if the study holds n_trials trained trials (finished or running)
        ask Optuna for a trial -> Hydra overrides -> compose that trial's config -> count parameters
        over budget: recorded (PRUNED, rejected=over_budget), never launched, does not count
        unbuildable: recorded FAIL with its message, never launched
        otherwise: claimed (launched=True)
    launch the job (Hydra's launcher) with a TrialReporter callback, heartbeating meanwhile
    tell the result: COMPLETE, PRUNED (the reporter stopped it), or FAIL (exception, NaN)

So a finished trial's slot is refilled at once (no batch waits for its slowest trial), a killed
sweep resumes where it stopped when the same command runs again, and n_trials is the study's
total of trained trials, whatever the number of invocations.
"""

import inspect
import logging
import math
import os
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import optuna
from hydra.core.utils import JobStatus
from hydra.core.plugins import Plugins
from hydra.errors import CompactHydraException, OverrideParseException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from optuna.distributions import BaseDistribution
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.exc import DBAPIError

from .config import STORAGE_ENV
from .liveness import LOST_WORKER_ATTR, fail_stale_trials, fail_unlaunched_trials, heartbeat
from .reporter import ACTIVE_STUDIES
from .search_space import SearchSpaceError, format_override, grid_choices, search_space_from_overrides
from .storage import (
    StorageError, check_url, claim_lock, has_password, local_file, load_or_create_study, masked, open_storage, retry_transient,
)

log = logging.getLogger(__name__)

WORKER_ENV = "MNIST_SWEEP_WORKER"  # set in the worker processes a sweep starts for n_jobs > 1
REJECTED = "over_budget"
CALLBACKS_KEY = "trainer.callbacks"  # where the job takes callback nodes (mnist_arch's trainer)
THREADS_KEY = "trainer.threads"  # where the job takes its CPU thread count


class SweepError(CompactHydraException):
    """A sweep cannot go on: bad sweeper config, over-budget space, too many failures."""


def trial_kind(trial: FrozenTrial) -> str:
    """complete | pruned | rejected | failed | running | waiting: what a results table shows."""
    if trial.user_attrs.get("rejected"):
        return "rejected"
    return {
        TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed",
        TrialState.RUNNING: "running", TrialState.WAITING: "waiting",
    }[trial.state]


def is_trained(trial: FrozenTrial) -> bool:
    """Counts toward n_trials: launched, and finished (complete or pruned) or still running."""
    return bool(trial.user_attrs.get("launched")) and trial.state in (
        TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING,
    )


def budget_constraint(trial: FrozenTrial) -> Tuple[float]:
    """Optuna 4's constraints_func (<= 0 is feasible): parameters over the budget."""
    return (float(trial.user_attrs.get("params_over_budget", 0)),)


class BudgetOptunaSweeper(Sweeper):
    def __init__(
        self,
        sampler: DictConfig,
        pruner: DictConfig,
        direction: Any,
        storage: Optional[str],
        study_name: str,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        params: Optional[DictConfig],
        custom_search_space: Optional[str],
        objectives: Optional[List[str]],
        max_rejected_streak: int,
        heartbeat_interval: int,
        grace_period: int,
        retry_stale_trials: bool,
        threads_per_job: Optional[int],
        storage_patience: int,
    ) -> None:
        self.sampler_cfg, self.pruner_cfg = sampler, pruner
        directions = list(direction) if isinstance(direction, (list, ListConfig)) else [direction]
        self.directions = [str(getattr(d, "name", d)).lower() for d in directions]
        for d in self.directions:
            if d not in ("maximize", "minimize"):
                raise SweepError(f"hydra.sweeper.direction={d!r} is not one of: maximize, minimize")
        self.storage_url = storage
        self.study_name = study_name
        self.n_trials, self.n_jobs = n_trials, n_jobs
        self.max_failure_rate = max_failure_rate
        self.params = params
        self.custom_search_space = get_method(custom_search_space) if custom_search_space else None
        self.objectives = list(objectives) if objectives else None
        self.max_rejected_streak = max_rejected_streak
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period
        self.retry_stale_trials = retry_stale_trials
        self.threads_per_job = threads_per_job
        self.storage_patience = storage_patience
        for key, value, ok in (
            ("n_trials", n_trials, n_trials >= 1), ("n_jobs", n_jobs, n_jobs >= 1),
            ("max_failure_rate", max_failure_rate, 0.0 <= max_failure_rate <= 1.0),
            ("max_rejected_streak", max_rejected_streak, max_rejected_streak >= 1),
            ("heartbeat_interval", heartbeat_interval, heartbeat_interval > 0),
            ("grace_period", grace_period, grace_period > heartbeat_interval),
        ):
            if not ok:
                raise SweepError(f"hydra.sweeper.{key}={value} is out of range (see sweeper/config.py)")
        if self.objectives is not None and len(self.objectives) != len(self.directions):
            raise SweepError(f"hydra.sweeper.objectives has {len(self.objectives)} names for {len(self.directions)} directions")
        try:
            check_url(storage)
        except StorageError as exc:
            raise SweepError(str(exc)) from None
        if n_jobs > 1 and storage is None:
            raise SweepError("hydra.sweeper.n_jobs > 1 needs a storage the worker processes share; set hydra.sweeper.storage")

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context = hydra_context
        self.config = config
        raw = OmegaConf.to_container(config.hydra.sweeper, resolve=False).get("storage")
        if isinstance(raw, str) and "${" not in raw and has_password(raw):
            raise SweepError(
                f"hydra.sweeper.storage={masked(raw)!r} holds a password, and Hydra writes the command line and "
                f"config to disk: put the URL in ${STORAGE_ENV} (or the password in PGPASSWORD / ~/.pgpass) instead"
            )
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    # ----------------------------------------------------------------- set-up of the study

    def _search_space(self, arguments: List[str]) -> Tuple[Dict[str, BaseDistribution], Dict[str, str]]:
        params = [f"{k}={v}" for k, v in (self.params or {}).items()]
        try:
            distributions, fixed = search_space_from_overrides(params + list(arguments))
        except (SearchSpaceError, OverrideParseException) as exc:
            raise SweepError(f"search space: {' '.join(str(exc).split())}") from None
        if not distributions and self.custom_search_space is None:
            raise SweepError(
                "the search space is empty: give hydra.sweeper.params (e.g. +search=arch_s4) or sweep overrides "
                "such as 'optim.lr=interval(0.01,0.2)'"
            )
        return distributions, fixed

    def _make_sampler(self, distributions: Dict[str, BaseDistribution]) -> optuna.samplers.BaseSampler:
        cfg = OmegaConf.to_container(self.sampler_cfg, resolve=True)
        worker = int(os.environ.get(WORKER_ENV, "0"))
        if cfg.get("seed") is not None and worker:
            cfg["seed"] += worker  # same seed in every worker process would propose the same points
        target = cfg.get("_target_", "")
        kwargs: Dict[str, Any] = {}
        if target.endswith("GridSampler"):
            try:
                kwargs["search_space"] = grid_choices(distributions)
            except SearchSpaceError as exc:
                raise SweepError(str(exc)) from None
        try:
            accepts = inspect.signature(get_method(target)).parameters
            if "constraints_func" in accepts and not hasattr(optuna.trial.Trial, "set_constraint"):
                kwargs["constraints_func"] = budget_constraint  # Optuna 4; Optuna 5 reads trial constraints
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # e.g. TPE's group=True
                return instantiate(cfg, **kwargs)
        except Exception as exc:
            raise SweepError(f"hydra.sweeper.sampler ({target}) cannot be made: {' '.join(str(exc).split())}") from None

    def _make_pruner(self) -> optuna.pruners.BasePruner:
        cfg = OmegaConf.to_container(self.pruner_cfg, resolve=True)
        try:
            return instantiate(cfg)
        except Exception as exc:
            raise SweepError(f"hydra.sweeper.pruner cannot be made: {' '.join(str(exc).split())}") from None

    @property
    def _prunes(self) -> bool:
        return len(self.directions) == 1  # Optuna prunes single-objective studies only

    def _metric_names(self) -> List[str]:
        if self.objectives:
            return self.objectives
        return [str(OmegaConf.select(self.config, "objective.metric", default="objective"))]

    # ----------------------------------------------------------------- the sweep

    def sweep(self, arguments: List[str]) -> Any:
        distributions, fixed = self._search_space(arguments)
        sampler = self._make_sampler(distributions)
        pruner = self._make_pruner()
        try:
            with claim_lock(self.storage_url):  # processes starting together create tables once
                storage = open_storage(self.storage_url)
                study = load_or_create_study(storage, self.study_name, self.directions, sampler, pruner)
        except StorageError as exc:
            raise SweepError(str(exc)) from None
        except DBAPIError as exc:  # unreachable at start: fail in seconds, do not wait
            raise SweepError(f"storage={masked(self.storage_url)!r} cannot be reached: {' '.join(str(exc.orig).split())[:200]}") from None
        if not study.metric_names:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(self._metric_names())
        ACTIVE_STUDIES[(self.storage_url, self.study_name)] = study
        worker = os.environ.get(WORKER_ENV)
        sweep_dir = str(self.config.hydra.sweep.dir)
        try:
            Path(sweep_dir).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SweepError(f"hydra.sweep.dir={sweep_dir} cannot be created: {exc.strerror or exc}") from None
        if worker is None:
            self._log_header(study, distributions, fixed)
        workers = [] if worker is not None else self._start_workers(sweep_dir)
        try:
            self._work(study, distributions, fixed, worker or "0")
        except StorageError as exc:
            raise SweepError(str(exc)) from None
        finally:
            for proc in workers:
                if proc.poll() is None and sys.exc_info()[0] is not None:
                    proc.terminate()
            codes = [proc.wait() for proc in workers]
        ACTIVE_STUDIES.pop((self.storage_url, self.study_name), None)
        if worker is None:
            if any(codes):
                log.warning("worker processes exited with codes %s", codes)
            self._write_results(study, sweep_dir)
        return None

    def _log_header(self, study: optuna.Study, distributions: Dict[str, BaseDistribution], fixed: Dict[str, str]) -> None:
        path = local_file(self.storage_url)
        where = f"{masked(self.storage_url)}" + (f" ({path})" if path else "")
        max_params = OmegaConf.select(self.config, "budget.max_params", default=None)
        done = sum(is_trained(t) for t in study.get_trials(deepcopy=False))
        log.info("storage: %s", where)
        log.info("study: %s (%s %s), %d of %d trained trials done", self.study_name,
                 "/".join(self.directions), "/".join(self._metric_names()), done, self.n_trials)
        pruner = type(study.pruner).__name__ if self._prunes else "none (Optuna prunes single-objective studies only)"
        log.info("sampler: %s, pruner: %s, n_jobs: %d", type(study.sampler).__name__, pruner, self.n_jobs)
        if max_params is not None:
            log.info("budget: %s parameters (over-budget trials are recorded, never trained)", f"{max_params:,}")
        else:
            log.info("budget: none (budget.max_params is null or absent)")
        log.info("search space: %s", ", ".join(f"{k}: {v}" for k, v in distributions.items()))
        if fixed:
            log.info("fixed: %s", " ".join(f"{k}={v}" for k, v in fixed.items()))

    def _start_workers(self, sweep_dir: str) -> List[subprocess.Popen]:
        """n_jobs - 1 more processes running this same command; each is a worker on the same study."""
        procs = []
        gpus = torch_gpu_count()
        for k in range(1, self.n_jobs):
            env = {**os.environ, WORKER_ENV: str(k)}
            if gpus > 1:
                env["CUDA_VISIBLE_DEVICES"] = str(k % gpus)
            cmd = [sys.executable, *sys.orig_argv[1:], f"hydra.sweep.dir={sweep_dir}"]
            procs.append(subprocess.Popen(cmd, env=env))
        if gpus > 1:
            os.environ["CUDA_VISIBLE_DEVICES"] = "0"
        return procs

    def _job_threads(self) -> int:
        if self.threads_per_job is not None:
            return self.threads_per_job
        return max(1, (os.cpu_count() or 1) // self.n_jobs)

    def _work(self, study: optuna.Study, distributions: Dict[str, BaseDistribution], fixed: Dict[str, str], worker: str) -> None:
        streak = 0
        smallest_rejected: Optional[int] = None
        while True:
            step = retry_transient(lambda: self._claim_next(study, distributions, fixed, worker),
                                   "claiming the next trial", self.storage_patience)
            if step is None:
                return
            if step == "wait":  # others' trials still run: wait for them, or for them to go stale
                time.sleep(min(self.heartbeat_interval, 5))
                continue
            trial, overrides, verdict = step
            if verdict is None:
                streak = 0
                self._run_trial(study, trial, overrides)
                continue
            kind, n_params, message = verdict
            log.info("trial %d %s: %s", trial.number, "rejected" if kind == REJECTED else "FAILED (not launched)", message)
            streak += 1
            if kind == REJECTED:
                smallest_rejected = min(n_params, smallest_rejected or n_params)
            if streak >= self.max_rejected_streak:
                raise SweepError(
                    f"the last {streak} trials were all over budget or unbuildable "
                    f"(smallest over-budget model: {smallest_rejected or 0:,} parameters): the search space "
                    "seems to be over budget; narrow it (smaller widths or multiplier) or raise budget.max_params"
                )

    def _claim_next(self, study: optuna.Study, distributions: Dict[str, BaseDistribution], fixed: Dict[str, str], worker: str):
        """Under the claim lock: None when the study is done, "wait", or (trial, overrides, verdict).

        The whole claim runs under the lock, a rejected trial's tell included, so any RUNNING trial
        without the "launched" mark seen here was left by a claim that a database outage cut short.
        """
        with claim_lock(self.storage_url):
            fail_stale_trials(study, self.grace_period, self.retry_stale_trials)
            fail_unlaunched_trials(study)
            trials = study.get_trials(deepcopy=False)
            self._check_failure_rate(trials)
            trained = [t for t in trials if is_trained(t)]
            if len(trained) >= self.n_trials:
                return "wait" if any(t.state == TrialState.RUNNING for t in trained) else None
            trial = study.ask(distributions)
            if self.custom_search_space is not None:
                self.custom_search_space(self.config, trial)
            overrides = [format_override(k, v) for k, v in trial.params.items()]
            overrides += [f"{k}={v}" for k, v in fixed.items() if k not in trial.params]
            verdict = self._check_budget(trial, overrides)
            if verdict is None:
                trial.set_user_attr("launched", True)
                trial.set_user_attr("worker", worker)
                trial.set_user_attr("host_pid", f"{socket.gethostname()}:{os.getpid()}")
            else:  # never launched: recorded before the lock is let go
                study.tell(trial, state=TrialState.PRUNED if verdict[0] == REJECTED else TrialState.FAIL,
                           skip_if_finished=True)
                if verdict[0] != REJECTED:
                    self._check_base_config(fixed, verdict[2])
            return trial, overrides, verdict

    def _check_failure_rate(self, trials: Sequence[FrozenTrial]) -> None:
        launched = [t for t in trials if t.user_attrs.get("launched") and t.state.is_finished()
                    and not t.user_attrs.get(LOST_WORKER_ATTR)]  # a killed worker is not the trial's failure
        failed = [t for t in launched if t.state == TrialState.FAIL]
        if failed and len(failed) / len(launched) > self.max_failure_rate:
            last = failed[-1]
            raise SweepError(
                f"{len(failed)} of {len(launched)} trained trials failed, over max_failure_rate={self.max_failure_rate} "
                f"(last: trial {last.number}: {last.user_attrs.get('error', 'no message')})"
            )

    def _check_budget(self, trial: optuna.Trial, overrides: List[str]) -> Optional[Tuple[str, int, str]]:
        """Compose the trial's config and count its model's parameters: no data, no training.

        Returns None when the trial may train, else (kind, n_params, message) after recording it.
        """
        from mnist_arch import count_parameters  # the sweeper's one use of the job's code
        from mnist_arch.errors import one_line

        started = time.perf_counter()
        trial.set_user_attr("overrides", overrides)
        try:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            n_params = count_parameters(cfg.model) if "model" in cfg else None
        except Exception as exc:
            message = one_line(exc)
            trial.set_user_attr("error", f"cannot build the trial's config: {message}")
            return ("unbuildable", 0, message)
        max_params = OmegaConf.select(cfg, "budget.max_params", default=None)
        if n_params is not None:
            trial.set_user_attr("n_params", n_params)
            trial.set_user_attr("max_params", max_params)
            excess = n_params - max_params if max_params is not None else -1
            trial.set_user_attr("params_over_budget", excess)
            if hasattr(trial, "set_constraint"):  # Optuna 5: samplers that handle constraints learn the infeasible region
                trial.set_constraint("params_over_budget", excess)
        trial.set_user_attr("budget_check_seconds", time.perf_counter() - started)
        if n_params is not None and max_params is not None and n_params > max_params:
            reason = f"{n_params:,} parameters > budget.max_params={max_params:,}"
            trial.set_user_attr("rejected", REJECTED)
            trial.set_user_attr("reason", reason)
            return (REJECTED, n_params, reason)
        return None

    def _check_base_config(self, fixed: Dict[str, str], trial_error: str) -> None:
        """After an unbuildable trial: stop at once if the config fails the same way without the searched values.

        Then the fault is the sweep's (a broken config file, a config edited under a running
        sweep), and every further trial would fail alike. A different error (say, a mandatory
        value only the search space fills) leaves the verdict to the trial.
        """
        from mnist_arch import count_parameters
        from mnist_arch.errors import one_line

        try:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, [f"{k}={v}" for k, v in fixed.items()])
            if "model" in cfg:
                count_parameters(cfg.model)
        except Exception as exc:
            if one_line(exc) != trial_error:
                return
            raise SweepError(
                f"every trial would fail: the sweep's config cannot be built even without the searched values: "
                f"{one_line(exc)}"
            ) from None

    def _job_overrides(self, trial: optuna.Trial, overrides: List[str]) -> List[str]:
        """The trial's overrides plus, where the task's config has the keys, its reporter and thread share."""
        job = list(overrides)
        if OmegaConf.select(self.config, CALLBACKS_KEY) is not None:
            metric = str(OmegaConf.select(self.config, "objective.metric", default="best_test_acc"))
            per_epoch = "val_acc" if "val" in metric else "test_acc"
            job.append(f"++{CALLBACKS_KEY}.optuna_trial={{_target_:sweeper.reporter.TrialReporter,"
                       f"trial_number:{trial.number},metric:{per_epoch},prune:{str(self._prunes).lower()}}}")
        user_set = any(o.split("=", 1)[0].lstrip("+~") == THREADS_KEY for o in overrides)
        if OmegaConf.select(self.config, THREADS_KEY, default="absent") != "absent" and not user_set:
            job.append(f"{THREADS_KEY}={self._job_threads()}")
        return job

    def _run_trial(self, study: optuna.Study, trial: optuna.Trial, overrides: List[str]) -> None:
        started = time.perf_counter()
        try:
            with heartbeat(study, trial._trial_id, self.heartbeat_interval):
                ret = self.launcher.launch([self._job_overrides(trial, overrides)], initial_job_idx=trial.number)[0]
        except OSError as exc:  # the job's folder cannot be written (unwritable or full disk): every trial would fail
            message = f"cannot write the job's output folder under {self.config.hydra.sweep.dir}: {exc.strerror or exc}"

            def record_failure() -> None:
                trial.set_user_attr("error", message)
                study.tell(trial, TrialState.FAIL, skip_if_finished=True)

            retry_transient(record_failure, f"recording trial {trial.number}", self.storage_patience)
            raise SweepError(message + "; the trial is recorded failed, finished trials are kept") from None
        seconds = time.perf_counter() - started
        attrs = retry_transient(lambda: study._storage.get_trial(trial._trial_id).user_attrs,
                                f"reading trial {trial.number}", self.storage_patience)
        values: Optional[List[float]] = None
        state, error = TrialState.COMPLETE, None
        if ret.status == JobStatus.FAILED:
            exc = ret._return_value  # the job's exception; the public accessor would raise it and print
            state, error = TrialState.FAIL, f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        elif "pruned_at_epoch" in attrs:
            state = TrialState.PRUNED
        else:
            try:
                raw = [attrs[name] for name in self.objectives] if self.objectives else ret.return_value
                values = [float(v) for v in (raw if isinstance(raw, (list, tuple, ListConfig)) else [raw])]
            except (KeyError, TypeError, ValueError) as exc:
                state, error = TrialState.FAIL, f"the job returned no usable objective: {exc}"
            else:
                if len(values) != len(self.directions):
                    state, error = TrialState.FAIL, f"{len(values)} objective values for {len(self.directions)} directions"
                elif not all(math.isfinite(v) for v in values):
                    state, error = TrialState.FAIL, f"objective is not finite: {values}"

        def record() -> None:
            if error:
                trial.set_user_attr("error", error)
            trial.set_user_attr("sweep_seconds", seconds)
            try:
                study.tell(trial, state=state, values=values if state == TrialState.COMPLETE else None,
                           skip_if_finished=True)
            except RuntimeError as exc:  # GridSampler stops the study when the grid is done
                if "Study.stop" not in str(exc):
                    raise

        try:
            retry_transient(record, f"recording trial {trial.number}", self.storage_patience)
        except UpdateFinishedTrialError:
            # Another worker failed it as stale while its heartbeats could not reach the database
            # (an outage longer than grace_period). It stays failed; its job folder has the metrics.
            log.warning("trial %d was marked failed by another worker during a database outage; its result is "
                        "not recorded (see %s)", trial.number, attrs.get("output_dir", "its job folder"))
            return
        self._log_trial(study, trial.number, state, values, attrs, seconds, error)

    def _log_trial(self, study, number, state, values, attrs, seconds, error) -> None:
        trials = study.get_trials(deepcopy=False)
        left = max(0, self.n_trials - sum(is_trained(t) for t in trials))
        value = "/".join(f"{v:.4g}" for v in values) if values else "-"
        best = ""
        if len(self.directions) == 1:
            complete = [t for t in trials if t.state == TrialState.COMPLETE]
            if complete:
                pick = max if self.directions[0] == "maximize" else min
                b = pick(complete, key=lambda t: t.value)
                best = f" | best {b.value:.4g} (trial {b.number})"
        parts = [f"trial {number} {state.name} {value}"]
        if attrs.get("n_params") is not None:
            parts.append(f"{attrs['n_params']:,} params")
        if attrs.get("epochs_run") is not None:
            parts.append(f"{attrs['epochs_run']} epochs")
        parts.append(f"{seconds:.0f}s{best}")
        parts.append(f"{left} left")
        if error:
            parts.append(error)
        log.info("%s", " | ".join(parts))

    def _write_results(self, study: optuna.Study, sweep_dir: str) -> None:
        """optimization_results.yaml in the sweep folder, as hydra-optuna-sweeper writes it."""
        complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        if not complete:
            log.info("no trial completed")
            return
        if len(self.directions) == 1:
            best = study.best_trial
            results = {"name": "optuna", "best_params": best.params, "best_value": best.value}
            log.info("best trial %d: %s = %.4g with %s", best.number, self._metric_names()[0], best.value, best.params)
        else:
            results = {"name": "optuna", "solutions": [
                {"params": t.params, "values": t.values} for t in study.best_trials
            ]}
            log.info("Pareto front: %d trials", len(study.best_trials))
        OmegaConf.save(OmegaConf.create(results), Path(sweep_dir) / "optimization_results.yaml")


def torch_gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:
        return 0
