"""The public API for jobs: the trial a job runs for, per-step reports, pruning.

Any Hydra app run by ``hydra/sweeper=optuna_budget`` can use it; nothing is added to the app's
config. Outside such a sweep (a plain run, another sweeper) ``current_trial()`` is None, so
the same code runs both ways::

    from sweeper.api import current_trial

    trial = current_trial()
    for step in range(1, steps + 1):
        score = train_one_epoch()
        if trial is not None and trial.report(score, step):
            break                       # pruned: the sweeper records the trial PRUNED
    if trial is not None:
        trial.set_user_attr("n_params", n_params)   # shown by sweep-results, usable as an objective
    return score

Raising ``optuna.TrialPruned`` after a pruning report has the same effect as returning.
With ``hydra.sweeper.repeats``, each repeat is a job of the same trial: ``trial.repeat`` is its
index (0 first); only the first repeat's reports feed the pruner, later ones record nothing.
The job finds its trial through its own Hydra config (``hydra.sweeper.storage``,
``hydra.sweeper.study_name`` and ``hydra.job.num``, the trial's number), so this works when the
job runs in the sweeper's process, in another process or on another machine (submitit).
"""

import logging
from typing import Any, Dict, Optional, Tuple

from .errors import squashed
from .interrupts import database_call  # signal handling only: cheap to import
from .config import STORAGE_PATIENCE_S, SWEEPER_TARGET  # Hydra and OmegaConf only: a plain run of an app loads no optuna

log = logging.getLogger(__name__)

# Studies opened by a sweeper in this process, by (storage URL, study name): an in-process job
# reuses the sweeper's connection (and an in-memory study is only reachable this way).
ACTIVE_STUDIES: Dict[Tuple[Optional[str], str], Any] = {}


class SweepTrial:
    """The trial a job runs for. Storage outages are logged and ridden out: the job trains on."""

    def __init__(self, study: Any, number: int, patience_s: float = STORAGE_PATIENCE_S):
        self._study = study
        self.number = number
        self._patience_s = patience_s  # a job that starts while the database is away waits for it this long
        with database_call():
            self._open(study, number)
        self.repeat = int(self._read().user_attrs.get("repeat", 0))  # which repeat of the trial this job runs

    def _open(self, study: Any, number: int) -> None:
        import optuna

        from .storage import retry_transient

        trial_id = retry_transient(
            lambda: study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number),
            f"finding trial {number}", self._patience_s)
        # Trial() reads the trial (and the sampler's relative search space) from the storage as well
        self._trial = retry_transient(lambda: optuna.trial.Trial(study, trial_id), f"opening trial {number}",
                                      self._patience_s)

    def _read(self):
        from .storage import retry_transient

        with database_call():
            return retry_transient(lambda: self._study._storage.get_trial(self._trial._trial_id),
                                   f"reading trial {self.number}", self._patience_s)

    @property
    def params(self) -> Dict[str, Any]:
        """The searched values, by their override key (e.g. ``optim.lr``)."""
        return dict(self._read().params)

    @property
    def user_attrs(self) -> Dict[str, Any]:
        return dict(self._read().user_attrs)

    @property
    def prunes(self) -> bool:
        """Whether reports can stop this trial: Optuna prunes single-objective studies only."""
        return len(self._study.directions) == 1

    def set_user_attr(self, key: str, value: Any) -> None:
        self._guarded(lambda: self._trial.set_user_attr(key, value), f"storing {key}")

    def report(self, value: float, step: int, last: bool = False) -> bool:
        """Record ``value`` at ``step`` (a positive int, e.g. the epoch); True when the pruner stops the trial here.

        After True the job should stop (return, or raise ``optuna.TrialPruned``): the trial is
        recorded PRUNED at this step whatever the job returns. ``last=True`` (the job's final
        step) records without asking the pruner: a trial that ran all its steps completes. In a
        multi-objective study, and in any repeat but the first, nothing is recorded and it is always False.
        """
        if not self.prunes or self.repeat > 0:
            return False

        from .trials import PRUNED_AT_ATTR

        def decide() -> bool:
            self._trial.report(float(value), int(step))
            if last or not self._trial.should_prune():
                return False
            self._trial.set_user_attr(PRUNED_AT_ATTR, int(step))
            return True

        return bool(self._guarded(decide, f"reporting step {step}", default=False))

    def _guarded(self, fn, what: str, default=None):
        from optuna.exceptions import StorageInternalError
        from sqlalchemy.exc import DBAPIError

        try:
            with database_call():  # an interrupt waits for the call: never a transaction left open
                return fn()
        except (StorageInternalError, DBAPIError) as exc:  # the database is away: go on, decide next time
            log.warning("trial %d: could not reach the sweep database (%s: %s); the job goes on",
                        self.number, what, squashed(exc, 120))
            return default


def current_trial() -> Optional[SweepTrial]:
    """The trial this job runs for, or None when the job is not run by an optuna_budget sweep."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    sweeper_cfg = hydra_cfg.sweeper
    if sweeper_cfg.get("_target_") != SWEEPER_TARGET or hydra_cfg.job.get("num") is None:
        return None
    from hydra.types import RunMode

    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    storage = sweeper_cfg.storage
    name = study_name(sweeper_cfg.study_name, hydra_cfg.job.name)
    patience = sweeper_cfg.get("storage_patience", STORAGE_PATIENCE_S)  # the sweep's own: a worker waits no longer
    repeated = int(OmegaConf.select(sweeper_cfg, "repeats.n", default=1) or 1) > 1
    study = open_study(storage, name, patience, sweeper_cfg.get("pruner"), repeated)
    return SweepTrial(study, int(hydra_cfg.job.num), patience)


def study_name(configured: Optional[str], job_name: str) -> str:
    """``hydra.sweeper.study_name``, or the app's job name where it is null (so a sweep resumes by default)."""
    return configured if configured is not None else job_name


def open_study(storage: Optional[str], name: str, patience_s: float = STORAGE_PATIENCE_S, pruner: Any = None,
               repeated: bool = False) -> Any:
    """The sweeper's own study where the job runs in its process; else the study opened from the storage,
    judging reports with ``pruner`` (the ``hydra.sweeper.pruner`` node; the sweep's, as a launcher that
    runs each job in its own process, such as submitit's, leaves the job only its config)."""
    study = ACTIVE_STUDIES.get((storage, name))
    if study is None:
        import optuna

        from .samplers import make_pruner
        from .storage import open_storage, retry_transient

        made = make_pruner(pruner, repeated) if pruner is not None else None
        study = retry_transient(lambda: optuna.load_study(study_name=name, storage=open_storage(storage), pruner=made),
                                f"opening study {name!r}", patience_s)
    return study
