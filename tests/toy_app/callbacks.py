"""Callbacks for the tests: a study callback that writes one JSON line per call (what the sweeper passed it),
and a trainer callback that stops a run after an epoch's checkpoint, as Ctrl-C or ``kill`` would."""

import json
import os
import signal
import time


class Recorder:
    def __init__(self, path: str, fail_on: int = -1):
        self.path, self.fail_on = path, fail_on

    def __call__(self, study, trial) -> None:
        if trial.number == self.fail_on:
            raise RuntimeError(f"tracker down at trial {trial.number}")
        with open(self.path, "a") as f:
            f.write(json.dumps({"study": study.study_name, "number": trial.number, "state": trial.state.name,
                                "value": trial.value if trial.values else None,
                                "rejected": trial.user_attrs.get("rejected")}) + "\n")


class StopAfterCheckpoint:
    """A trainer callback (listed after the sweep's reporter): after epoch ``epoch``'s checkpoint, ``sig``."""

    def __init__(self, epoch: int, sig: str = "SIGINT"):
        self.epoch, self.sig = epoch, sig

    def on_epoch_end(self, epoch, record) -> bool:
        return False

    def on_checkpoint(self, path, epoch) -> None:
        if epoch == self.epoch:
            os.kill(os.getpid(), getattr(signal, self.sig))
            time.sleep(30)  # the sweep's handler acts at the next bytecode
            raise RuntimeError(f"{self.sig} was not handled")


class Configured:
    """A study callback with a nested argument, as a tracker's keyword arguments would be (a dict of lists)."""

    def __init__(self, options):
        self.options = options

    def __call__(self, study, trial) -> None:
        pass
