"""The per-epoch bridge between a training job and its Optuna trial.

The sweeper adds one ``TrialReporter`` to each job's ``trainer.callbacks`` (a ``_target_`` node
in the job's overrides), so the trainer only sees "a callback". The reporter reaches its trial
through the storage named in the job's own ``hydra.sweeper`` config, so it works whether the job
runs in the sweeper's process, in another process, or on another machine.
"""

import logging
from typing import Any, Dict, Optional, Tuple

import optuna
from hydra.core.hydra_config import HydraConfig

from optuna.exceptions import StorageInternalError
from sqlalchemy.exc import DBAPIError

from .storage import open_storage, retry_transient

log = logging.getLogger(__name__)

# Studies opened by a sweeper in this process, by (storage URL, study name): an in-process job
# reuses the sweeper's connection (and an in-memory study is only reachable this way).
ACTIVE_STUDIES: Dict[Tuple[Optional[str], str], optuna.Study] = {}

RESULT_PATIENCE_S = 300  # a finished trial's metrics are worth waiting for

# Summary metrics of the job's result stored on the trial for result tables.
RESULT_ATTRS = (
    "n_params", "best_test_acc", "final_test_acc", "best_epoch", "epoch_reached_target", "epochs_run",
    "min_last_k_test_acc", "target_acc", "best_val_acc", "min_last_k_val_acc",
    "seconds", "device", "stop_reason", "objective_metric", "objective",
)


class TrialReporter:
    """Reports each epoch's ``metric`` to the trial and stops the run when the pruner says so."""

    def __init__(self, trial_number: int, metric: str = "test_acc", prune: bool = True,
                 storage: Optional[str] = None, study_name: Optional[str] = None):
        if storage is None or study_name is None:
            sweeper_cfg = HydraConfig.get().sweeper
            storage = sweeper_cfg.storage if storage is None else storage
            study_name = sweeper_cfg.study_name if study_name is None else study_name
        study = ACTIVE_STUDIES.get((storage, study_name))
        if study is None:
            study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
        self.study = study
        self.metric = metric
        self.prune = prune
        trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, trial_number)
        self.trial = optuna.trial.Trial(study, trial_id)
        self.curve = []

    def on_epoch_end(self, epoch: int, record: Dict[str, Any]) -> bool:
        value = float(record[self.metric])
        self.curve.append(value)
        last_epoch = epoch >= record.get("epochs", float("inf"))  # a trial that ran all its epochs completes
        try:
            self.trial.set_user_attr("curve", self.curve)  # per-epoch values, also for multi-objective
            if not self.prune:
                return False
            self.trial.report(value, epoch)
            if last_epoch or not self.trial.should_prune():
                return False
            self.trial.set_user_attr("pruned_at_epoch", epoch)
        except (StorageInternalError, DBAPIError) as exc:  # the database is away: train on, decide next epoch
            log.warning("trial %d: could not reach the database after epoch %d (%s); training goes on",
                        self.trial.number, epoch, " ".join(str(exc).split())[:120])
            return False
        log.info("trial %d pruned after epoch %d (%s %.2f)", self.trial.number, epoch, self.metric, value)
        return True

    def on_train_end(self, result: Dict[str, Any]) -> None:
        attrs = {key: result[key] for key in RESULT_ATTRS if key in result}
        attrs["curve"] = self.curve
        if any("val_acc" in h for h in result.get("history", ())):  # selecting on validation needs its curve
            attrs["val_curve"] = [h.get("val_acc") for h in result["history"]]
        if HydraConfig.initialized():
            attrs["output_dir"] = HydraConfig.get().runtime.output_dir

        def store() -> None:
            for key, value in attrs.items():
                self.trial.set_user_attr(key, value)

        retry_transient(store, f"storing the results of trial {self.trial.number}", RESULT_PATIENCE_S)
