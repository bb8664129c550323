"""A study callback for the callbacks tests: one JSON line per call, what the sweeper passed it."""

import json


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
