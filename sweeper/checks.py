"""Checks of the sweeper's settings, before any study is opened: one line naming the value and what is allowed."""

from typing import Any, Dict, List, Optional

from .errors import SweepError

RANGES = {  # key -> (test, what is allowed, in words)
    "n_trials": (lambda v: v >= 1, ">= 1"), "n_jobs": (lambda v: v >= 1, ">= 1"),
    "max_failure_rate": (lambda v: 0.0 <= v <= 1.0, "between 0 and 1"),
    "max_rejected_streak": (lambda v: v >= 1, ">= 1"), "heartbeat_interval": (lambda v: v > 0, "> 0"),
    "storage_patience": (lambda v: v >= 0, ">= 0"),
}


def check_settings(values: Dict[str, Any]) -> None:
    for key, (ok, allowed) in RANGES.items():
        if not ok(values[key]):
            raise SweepError(f"hydra.sweeper.{key}={values[key]} is out of range: it must be {allowed}")
    if values["grace_period"] <= values["heartbeat_interval"]:
        raise SweepError(f"hydra.sweeper.grace_period={values['grace_period']} must be more than "
                         f"heartbeat_interval={values['heartbeat_interval']}")
    if values["n_complete_trials"] is not None and values["n_complete_trials"] < 1:
        raise SweepError(f"hydra.sweeper.n_complete_trials={values['n_complete_trials']} is out of range: it must be "
                         ">= 1, or null (end at n_trials only)")
    name = values["study_name"]
    if name is not None and not str(name).strip():
        raise SweepError("hydra.sweeper.study_name is empty; give a name, or null for the app's job name")


def check_objectives(objectives: Optional[List[str]], metrics: Optional[List[str]], directions: List[str]) -> None:
    """One name per direction; each among the metrics the app says it reports, where it says."""
    if objectives is None:
        return
    if len(objectives) != len(directions):
        raise SweepError(f"hydra.sweeper.objectives has {len(objectives)} names for {len(directions)} directions "
                         f"({'/'.join(directions)}): give one per direction")
    unknown = [o for o in objectives if metrics is not None and o not in metrics]
    if unknown:
        raise SweepError(f"hydra.sweeper.objectives: {', '.join(unknown)} is not a metric the app reports; "
                         f"it reports: {', '.join(metrics)}")
