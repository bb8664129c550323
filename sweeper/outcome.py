"""What a finished job means for its trial: COMPLETE with values, PRUNED, or FAIL with a reason.

A job's return value gives the objective values: a number (one objective), a tuple or list (one
per direction, in order), or a dict (values by the names in ``hydra.sweeper.objectives``). A job
that returns none of these may store the named values as user attributes (``sweeper.api``).
"""

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import optuna
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, ListConfig, OmegaConf
from optuna.trial import TrialState

from .errors import squashed
from .trials import LEGACY_ATTRS, PRUNED_AT_ATTR

Outcome = Tuple[TrialState, Optional[List[float]], Optional[str]]


def _values(returned: Any, attrs: Dict[str, Any], objectives: Optional[Sequence[str]], n: int) -> List[Any]:
    if isinstance(returned, DictConfig):
        returned = OmegaConf.to_container(returned, resolve=True)
    if isinstance(returned, ListConfig):
        returned = list(returned)
    if isinstance(returned, dict):
        if not objectives:
            raise ValueError(f"the job returned a dict ({', '.join(map(str, returned))}): name the values to "
                             "optimise with hydra.sweeper.objectives")
        missing = [name for name in objectives if name not in returned]
        if missing:
            raise ValueError(f"the job's result has no {', '.join(map(repr, missing))}; it has: {', '.join(map(str, returned))}")
        return [returned[name] for name in objectives]
    if isinstance(returned, (list, tuple)):
        return list(returned)
    if returned is not None and (n == 1 or not objectives):
        return [returned]
    if objectives:  # the job stored its metrics on the trial
        missing = [name for name in objectives if name not in attrs]
        if missing:
            raise ValueError(f"the job returned {returned!r} and stored no {', '.join(map(repr, missing))} on its trial")
        return [attrs[name] for name in objectives]
    raise ValueError("the job returned None; return the objective (a number, a tuple, or a dict with "
                     "hydra.sweeper.objectives)")


def returned_metrics(returned: Any, metrics: Optional[Sequence[str]]) -> Dict[str, float]:
    """The numbers a job returned by name (a dict): those named in ``hydra.sweeper.metrics`` where it is
    given, else every one. Kept on the trial beside the objectives, so a second metric is not lost."""
    if isinstance(returned, DictConfig):
        returned = OmegaConf.to_container(returned, resolve=True)
    if not isinstance(returned, dict):
        return {}
    return {str(k): v for k, v in returned.items() if (metrics is None or k in metrics)
            and isinstance(v, (int, float)) and not isinstance(v, bool)}


def job_outcome(ret: JobReturn, attrs: Dict[str, Any], objectives: Optional[Sequence[str]], n: int) -> Outcome:
    if ret.status == JobStatus.FAILED:
        exc = ret._return_value  # the job's exception; the public accessor would raise it and print
        if isinstance(exc, optuna.TrialPruned):
            return TrialState.PRUNED, None, None
        return TrialState.FAIL, None, f"{type(exc).__name__}: {squashed(exc)}"
    if PRUNED_AT_ATTR in attrs or LEGACY_ATTRS[PRUNED_AT_ATTR] in attrs:
        return TrialState.PRUNED, None, None
    try:
        values = [float(v) for v in _values(ret.return_value, attrs, objectives, n)]
    except (TypeError, ValueError) as exc:
        return TrialState.FAIL, None, f"the job returned no usable objective: {exc}"
    if len(values) != n:
        return TrialState.FAIL, None, f"the job returned {len(values)} objective values for {n} directions"
    if not all(math.isfinite(v) for v in values):
        return TrialState.FAIL, None, f"objective is not finite: {values}"
    return TrialState.COMPLETE, values, None
