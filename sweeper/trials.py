"""The trial vocabulary: what "trained", "rejected" and "failed" mean, and the attribute names.

The sweeper writes these; result tables and plots read them. Nothing here opens a storage or
imports the sweeper, so reading a database does not load the sweep machinery.
"""

from typing import Tuple

from optuna.trial import FrozenTrial, TrialState

REJECTED = "over_budget"  # value of the "rejected" user attribute of a trial over the budget
DUPLICATE = "duplicate"  # ... of a trial that repeated a trained trial's parameters (never launched)
LAUNCHED_ATTR = "launched"  # set when a trial is claimed to be trained; never on rejected ones
OVERRIDES_ATTR = "overrides"  # the Hydra overrides of the trial (searched values and the sweep's fixed ones)
ERROR_ATTR = "error"
BUDGET_MAX_ATTR = "budget_max"  # the budget's limit for this trial
BUDGET_NAME_ATTR = "budget_name"  # the name the measured value is stored under (e.g. n_params)
BUDGET_CONSTRAINT = "budget_excess"  # measured value minus the limit: <= 0 is feasible
PRUNED_AT_ATTR = "pruned_at_step"  # the step the pruner stopped the trial at (sweeper.api)
RETRY_OF_ATTR = "retry_of"  # on a trial queued to run a lost or interrupted trial's point again: that trial's number
# written by the sweeper, not the job: left out of a repeat's record of what its job stored
SWEEPER_ATTRS = frozenset({
    LAUNCHED_ATTR, OVERRIDES_ATTR, ERROR_ATTR, BUDGET_MAX_ATTR, BUDGET_NAME_ATTR, BUDGET_CONSTRAINT, "rejected",
    "reason", "worker", "host_pid", "worker_started", "budget_check_seconds", "sweep_seconds", "interrupted",
    "lost_worker", RETRY_OF_ATTR,
    "repeat", "repeat_values", "repeats_run", "repeat_seconds", "repeat_attrs", "repeats_n", "repeat_key",
    "repeats_aggregate", "raced_out_after", "continues", "carried_steps", "traceback", "error_log",
    "checkpoint", "metric_names",
})
METRICS_ATTR = "metric_names"  # the names of the metrics a trial's job gave (hydra.sweeper.metrics): the table's columns
LEGACY_ATTRS = {BUDGET_MAX_ATTR: "max_params", BUDGET_CONSTRAINT: "params_over_budget", PRUNED_AT_ATTR: "pruned_at_epoch"}


def attr(trial: FrozenTrial, name: str, default=None):
    """A user attribute, also under the name studies of earlier versions stored it with."""
    if name in trial.user_attrs:
        return trial.user_attrs[name]
    return trial.user_attrs.get(LEGACY_ATTRS.get(name, name), default)


def trial_kind(trial: FrozenTrial) -> str:
    """complete | pruned | raced | rejected | failed | running | waiting: what a results table shows.

    raced: stopped between its repeats, once it could no longer reach the best (sweeper.repeats).
    """
    if trial.user_attrs.get("rejected"):
        return "rejected"
    if trial.state == TrialState.PRUNED and trial.user_attrs.get("raced_out_after") is not None:
        return "raced"
    return {
        TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed",
        TrialState.RUNNING: "running", TrialState.WAITING: "waiting",
    }[trial.state]


def is_trained(trial: FrozenTrial) -> bool:
    """Counts toward n_trials: launched, and finished (complete or pruned) or still running."""
    return bool(trial.user_attrs.get(LAUNCHED_ATTR)) and trial.state in (
        TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING,
    )


def budget_constraint(trial: FrozenTrial) -> Tuple[float]:
    """Optuna's constraints_func (<= 0 is feasible): how far the trial's measure is over the budget."""
    return (float(attr(trial, BUDGET_CONSTRAINT, 0)),)
