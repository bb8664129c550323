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

Checkpoints: a job that saves its state as it goes can resume a trial that was stopped (Ctrl-C,
SIGTERM, a preempted or lost job) instead of starting it again::

    trial = current_trial()
    first = 1
    if trial is not None and trial.checkpoint.load("state.ckpt") is not None:
        first = restore("state.ckpt") + 1         # the app's own format; the step it saved at
    for step in range(first, steps + 1):
        ...
        if trial is not None:
            write_state("state.ckpt", step)
            trial.checkpoint.save("state.ckpt", step)

The sweeper keeps the file in an artifact store (``hydra.sweeper.checkpoint.store``), carries it to
the trial that runs the stopped one's point again, and replays the reports up to its step there
(``sweeper/checkpoints.py``). A job that never saves one runs as before.
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

    def __init__(self, study: Any, number: int, patience_s: float = STORAGE_PATIENCE_S, checkpoint_store: Any = None):
        self._study = study
        self.number = number
        self._patience_s = patience_s  # a job that starts while the database is away waits for it this long
        with database_call():
            self._open(study, number)
        frozen = self._read()
        self._attrs_at_start = frozen.user_attrs
        self._reported = set(frozen.intermediate_values)  # carried from a stopped trial, or before a requeue
        self._unreported: Dict[int, float] = {}  # reports the database was away for: sent with the next one
        self.repeat = int(self._attrs_at_start.get("repeat", 0))  # which repeat of the trial this job runs
        self._checkpoint_store = checkpoint_store  # where checkpoints go (checkpoints.location)
        self._checkpoint: Optional[TrialCheckpoint] = None

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

    @property
    def checkpoint(self) -> "TrialCheckpoint":
        """This trial's checkpoint: ``load(path)`` what to resume from, ``save(path, step)`` as the job goes."""
        if self._checkpoint is None:
            from .checkpoints import location

            where = self._checkpoint_store if self._checkpoint_store is not None else location(None, None)
            self._checkpoint = TrialCheckpoint(self, where, self._study.study_name, self._attrs_at_start)
        return self._checkpoint

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
            for earlier, kept in sorted(self._unreported.items()):  # the database is back: the curve has no gap
                if earlier not in self._reported:
                    self._trial.report(kept, earlier)
                    self._reported.add(earlier)
                del self._unreported[earlier]
            if int(step) in self._reported:
                return False  # carried from the stopped trial this one resumes, or reported before a requeue
            self._trial.report(float(value), int(step))
            self._reported.add(int(step))
            if last or not self._trial.should_prune():
                return False
            self._trial.set_user_attr(PRUNED_AT_ATTR, int(step))
            return True

        decided = self._guarded(decide, f"reporting step {step}")
        if decided is None and int(step) not in self._reported:  # kept for the next report, or a checkpoint's note
            self._unreported[int(step)] = float(value)
        return bool(decided)

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


class TrialCheckpoint:
    """Where a job saves its state to resume from; files in the app's own format, kept by the sweeper.

    ``step`` is the step of the checkpoint this job can resume from (None: start from the first).
    """

    def __init__(self, trial: SweepTrial, where: Any, study_name: str, attrs: Dict[str, Any]):
        from .checkpoints import record

        self._trial, self.where, self._study_name = trial, where, study_name
        rec = record(attrs)
        self._record = rec if rec is not None and int(rec.get("repeat", 0)) == trial.repeat else None
        self._unrecorded: Optional[Dict[str, Any]] = None  # saved while the database was away (``save``)
        self._store = None

    @property
    def step(self) -> Optional[int]:
        return self._record["step"] if self._record is not None else None

    def _opened(self):
        from .checkpoints import open_store

        if self._store is None:
            self._store = open_store(self.where)
        return self._store

    def load(self, path: Any) -> Optional[int]:
        """Write the checkpoint to resume from to ``path``; its step, or None when there is none (or it cannot
        be read: one line says why, and the job starts from its first step)."""
        from pathlib import Path

        rec = self._record
        if rec is None:
            return None
        path = Path(path)
        part = path.with_name(f".{path.name}.part")
        try:
            with self._opened().open_reader(rec["id"]) as reader, open(part, "wb") as out:
                while chunk := reader.read(1 << 20):
                    out.write(chunk)
            part.replace(path)
        except Exception as exc:
            part.unlink(missing_ok=True)
            log.warning("trial %d: its checkpoint of step %d cannot be read (%s: %s); starting from the first step",
                        self._trial.number, rec["step"], type(exc).__name__, squashed(exc, 160))
            return None
        return int(rec["step"])

    def save(self, path: Any, step: int) -> None:
        """Keep the file at ``path`` as this trial's checkpoint at ``step``; the one it replaces is removed.

        Written whole before the trial's record names it: a kill during the write leaves the
        previous checkpoint in force. While the database is away the record cannot move: the file
        stays, named by a note beside it with the reports the database did not take
        (``checkpoints.note_unrecorded``), and a sweep stopped by the outage resumes from it.
        """
        from .checkpoints import CHECKPOINT_ATTR, clear_unrecorded, new_id, note_unrecorded, remove, trial_folder

        trial = self._trial
        rec = {"id": new_id(self.where, self._study_name, trial.number, trial.repeat, int(step)), "step": int(step),
               "repeat": trial.repeat}
        with open(path, "rb") as body:
            self._opened().write(rec["id"], body)
        if not trial._guarded(lambda: trial._trial.set_user_attr(CHECKPOINT_ATTR, rec) or True,
                              f"recording its checkpoint of step {step}", default=False):
            reports = [[s, v] for s, v in sorted(trial._unreported.items()) if s <= int(step)]
            if note_unrecorded(self.where, self._study_name, trial.number, {**rec, "reports": reports}):
                rec, self._unrecorded = self._unrecorded, rec
            remove(self.where, rec)  # the one it replaces (or, with no note, this one)
            return
        if self._unrecorded is not None:
            clear_unrecorded(self.where, self._study_name, trial.number)
            remove(self.where, self._unrecorded)
            self._unrecorded = None
        old, self._record = self._record, rec
        if old is not None and old["id"] != rec["id"]:
            own = trial_folder(self.where, self._study_name, trial.number)
            folder = old["id"].rsplit("/", 1)[0]
            remove(self.where, old, [folder] if folder != own else [])


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
    from .checkpoints import location

    where = location(OmegaConf.select(sweeper_cfg, "checkpoint.store", default=None), storage)
    return SweepTrial(study, int(hydra_cfg.job.num), patience, where)


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
