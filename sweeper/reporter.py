"""An epoch callback for trainers that take callbacks, built on the public API (``sweeper.api``).

A trainer that calls ``on_epoch_end(epoch, record)`` after each epoch (True stops it) and
``on_train_end(result)`` at the end can list it in its config, e.g. mnist_arch's::

    trainer:
      callbacks:
        sweep_trial: {_target_: sweeper.reporter.TrialReporter, metric: test_acc}

In a sweep it reports ``record[metric]`` per epoch (the pruner may stop the run, never after the
last epoch) and stores the run's scalar results on the trial; outside a sweep it does nothing.

For trainers that checkpoint through callbacks (``on_checkpoint(path, epoch)`` after an epoch,
``resume_from(path) -> bool`` at the start, ``on_resumed(epoch, history)`` once restored), it keeps
each checkpoint as the trial's (``sweeper.api``'s ``checkpoint``) and hands a stopped trial's last
one to the job that resumes it.
"""

import logging
from typing import Any, Dict, List

from .api import current_trial

log = logging.getLogger(__name__)

RESULT_PATIENCE_S = 300  # a finished trial's metrics are worth waiting for


class TrialReporter:
    def __init__(self, metric: str = "test_acc"):
        self.metric = metric
        self.trial = current_trial()
        self.curve: List[float] = []

    def on_epoch_end(self, epoch: int, record: Dict[str, Any]) -> bool:
        if self.trial is None:
            return False
        if self.metric not in record:
            raise KeyError(f"TrialReporter: the epoch record has no {self.metric!r}; it has: {', '.join(record)}")
        value = float(record[self.metric])
        self.curve.append(value)
        self.trial.set_user_attr("curve", self.curve)  # per-epoch values, also for multi-objective studies
        last = epoch >= record.get("epochs", float("inf"))  # a trial that ran all its epochs completes
        if not self.trial.report(value, epoch, last=last):
            return False
        log.info("trial %d pruned after epoch %d (%s %.2f)", self.trial.number, epoch, self.metric, value)
        return True

    def resume_from(self, path: Any) -> bool:
        """Write the checkpoint this trial resumes from to ``path``; False when there is none."""
        return self.trial is not None and self.trial.checkpoint.load(path) is not None

    def on_resumed(self, epoch: int, history: List[Dict[str, Any]]) -> None:
        """The run goes on after ``epoch``: the curve so far is the restored history's."""
        self.curve = [float(h[self.metric]) for h in history if self.metric in h]

    def on_checkpoint(self, path: Any, epoch: int) -> None:
        if self.trial is not None:
            self.trial.checkpoint.save(path, epoch)

    def on_train_end(self, result: Dict[str, Any]) -> None:
        if self.trial is None:
            return
        from hydra.core.hydra_config import HydraConfig

        from .storage import retry_transient

        attrs = {k: v for k, v in result.items() if isinstance(v, (int, float, str, bool)) or v is None}
        attrs["curve"] = self.curve
        history = result.get("history") or ()
        for key in ("val_acc",):  # selecting on validation needs its curve
            if any(key in h for h in history):
                attrs["val_curve"] = [h.get(key) for h in history]
        if HydraConfig.initialized():
            attrs["output_dir"] = HydraConfig.get().runtime.output_dir

        def store() -> None:
            for key, value in attrs.items():
                self.trial._trial.set_user_attr(key, value)

        retry_transient(store, f"storing the results of trial {self.trial.number}", RESULT_PATIENCE_S)
