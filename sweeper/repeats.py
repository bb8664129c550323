"""Repeats of a trial (``hydra.sweeper.repeats``): the same point run under several seeds, aggregated, raced.

Each repeat is a Hydra job of its own (folder ``<subdir>/repeat_<k>``) with ``<key>=<value>``
added to the trial's overrides; its job number is the trial's, so the job finds its trial
through ``sweeper.api`` as without repeats. The trial's value is the aggregate (``mean``,
``min``, ``max`` or ``median``) of the repeats' values, each objective of a multi-objective
study aggregated on its own. The trial records, after every repeat, ``repeat_values`` (one
value, or one list per objective, per repeat, in order), ``repeats_run``, ``repeat_seconds``
and ``repeat_attrs`` (what the job had stored on the trial after that repeat).

Per-step pruning: the first repeat's reports feed the pruner, as a trial without repeats
would; later repeats' reports record nothing and never prune (``SweepTrial.repeat`` tells a
job which repeat it is). A median or percentile pruner compares them with every trial whose
first repeat ran all its steps (``samplers.FirstRepeatsPruner``), raced-out ones included.

Racing (``race: true``, one objective): after each repeat, the trial is stopped when it can no
longer reach the best completed trial's value, even if every repeat still to run gave the best
value one repeat can give (``bound``, else unbounded). That rule is exact: a trial raced out
would, had it run all its repeats, have ended below the best (maximize; above it, minimize),
as long as no repeat passes ``bound``. For ``min`` under maximize (``max`` under minimize) and
for ``median`` once more than half the repeats ran, no bound is needed: one repeat under the
best decides ``min``. ``mean`` and the other ``max``/``min`` can race only with a ``bound``
(an accuracy in percent: 100). A raced-out trial is recorded PRUNED with ``raced_out_after``
(the repeats it ran) and counts as trained.

A trial interrupted (or lost, with ``retry_stale_trials``) after some of its repeats finished
is queued again with those repeats' results (``checkpoints.carried_over``): the resumed sweep
runs only the repeats left, the interrupted one from its checkpoint where the job saved one.
"""

import math
import re
import statistics
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

from omegaconf import DictConfig, OmegaConf

from .errors import SweepError

AGGREGATES: Dict[str, Callable[[Sequence[float]], float]] = {
    "mean": statistics.fmean, "min": min, "max": max, "median": statistics.median,
}
# user attributes the sweeper keeps per trial for its repeats
REPEAT_ATTR = "repeat"  # the index of the repeat now running: sweeper.api reads it
REPEAT_VALUES_ATTR = "repeat_values"
REPEATS_RUN_ATTR = "repeats_run"
REPEAT_SECONDS_ATTR = "repeat_seconds"
REPEAT_ATTRS_ATTR = "repeat_attrs"
REPEATS_N_ATTR = "repeats_n"
REPEAT_KEY_ATTR = "repeat_key"
AGGREGATE_ATTR = "repeats_aggregate"
RACED_OUT_ATTR = "raced_out_after"
CONTINUES_ATTR = "continues"  # the trial whose finished repeats this one carries on from
CARRIED_STEPS_ATTR = "carried_steps"  # that trial's per-step reports, [[step, value], ...]
CARRIED = (REPEAT_VALUES_ATTR, REPEAT_SECONDS_ATTR, REPEAT_ATTRS_ATTR)


def single_quoted(text: str) -> str:
    """``text`` as a quoted value of Hydra's override grammar, which reads it back as ``text``.

    The grammar takes a backslash as written, except in a run of them before a quote or at the string's
    end: there each pair reads as one (and ``\\'`` as a quote). So only those runs are doubled.
    """
    escaped = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", text)
    return "'" + re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped) + "'"


@dataclass
class Repeats:
    n: int
    key: str
    values: List[Any]
    aggregate: str
    race: bool
    bound: Optional[float]
    subdir: Optional[str]  # hydra.sweep.subdir as written (uninterpolated)

    @classmethod
    def from_config(cls, cfg: DictConfig, config: DictConfig, fixed: Dict[str, str], searched: Sequence[str],
                    directions: Sequence[str]) -> "Repeats":
        """Checked against the sweep: one line naming the bad value and what is allowed."""
        n, key, aggregate = int(cfg.n), str(cfg.key), str(cfg.aggregate)
        if n < 1:
            raise SweepError(f"hydra.sweeper.repeats.n={n} is out of range: it must be >= 1")
        if aggregate not in AGGREGATES:
            raise SweepError(f"hydra.sweeper.repeats.aggregate={aggregate!r} is not one of: {', '.join(AGGREGATES)}")
        bound = None if cfg.get("bound") is None else float(cfg.bound)
        subdir = OmegaConf.to_container(config.hydra.sweep, resolve=False).get("subdir")
        if n == 1:
            return cls(1, key, [], aggregate, False, bound, subdir)
        if key in searched:
            raise SweepError(f"hydra.sweeper.repeats.key={key} is also searched: a repeat's {key} must be the "
                             "sweeper's to set")
        values = list(cfg["values"]) if cfg.get("values") is not None else None
        if values is None:
            base = fixed.get(key, OmegaConf.select(config, key, default=None))
            try:
                values = [int(base) + k for k in range(n)]
            except (TypeError, ValueError):
                raise SweepError(f"hydra.sweeper.repeats: the config's {key}={base!r} is not an integer to count "
                                 f"from; give hydra.sweeper.repeats.values (a list of {n})") from None
        if len(values) != n or len({str(v) for v in values}) != n:
            raise SweepError(f"hydra.sweeper.repeats.values={values} must be {n} distinct values (repeats.n={n})")
        repeats = cls(n, key, values, aggregate, bool(cfg.race), bound, subdir)
        if repeats.race:
            if len(directions) != 1:
                raise SweepError("hydra.sweeper.repeats.race needs a single objective: a multi-objective study has no "
                                 "one best trial to race against")
            if not repeats.can_race(directions[0]):
                raise SweepError(f"hydra.sweeper.repeats.race with aggregate={aggregate} under {directions[0]} can "
                                 "never stop a trial without hydra.sweeper.repeats.bound (the best value one repeat "
                                 "can reach, e.g. 100 for an accuracy in percent)")
        return repeats

    @property
    def active(self) -> bool:
        return self.n > 1

    def describe(self) -> str:
        if not self.active:
            return "none"
        race = f", raced{f' (bound {self.bound:g})' if self.bound is not None else ''}" if self.race else ""
        return f"{self.n} per trial ({self.key} = {', '.join(map(str, self.values))}), {self.aggregate}{race}"

    def job_overrides(self, overrides: List[str], k: int) -> List[str]:
        """The trial's overrides for repeat ``k``: its key set, and a folder of its own under the trial's."""
        if not self.active:
            return list(overrides)
        own = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") == self.key]
        job = [o for o in overrides if o not in own]
        # the user's "+seed=0" adds a key the app's config lacks: each repeat adds it alike
        prefix = next((o[:len(o) - len(o.lstrip("+"))] for o in own if o.startswith("+")), "")
        job.append(f"{prefix}{self.key}={self.values[k]}")
        if self.subdir is not None:
            job.append(f"hydra.sweep.subdir={single_quoted(f'{self.subdir}/repeat_{k}')}")
        return job

    def aggregated(self, per_repeat: Sequence[Sequence[float]]) -> List[float]:
        """The trial's values: each objective aggregated over the repeats."""
        return aggregate(self.aggregate, per_repeat)

    def best_possible(self, so_far: Sequence[float], direction: str) -> float:
        """The trial's best final aggregate, if every repeat left gave ``bound`` (else the unbounded best)."""
        sign = 1 if direction == "maximize" else -1
        best_repeat = self.bound if self.bound is not None else sign * math.inf
        return float(AGGREGATES[self.aggregate]([*so_far, *[best_repeat] * (self.n - len(so_far))]))

    def can_race(self, direction: str) -> bool:
        """Whether any repeat can ever decide: the best case after all but one repeat is finite."""
        return self.bound is not None or math.isfinite(self.best_possible([0.0] * (self.n - 1), direction))

    def raced_out(self, so_far: Sequence[float], incumbent: Optional[float], direction: str) -> bool:
        """True when the trial can no longer reach ``incumbent`` (the best completed trial's value)."""
        if not self.race or incumbent is None or not so_far or len(so_far) >= self.n:
            return False
        best = self.best_possible(so_far, direction)
        return best < incumbent if direction == "maximize" else best > incumbent


def aggregate(how: str, per_repeat: Sequence[Sequence[float]]) -> List[float]:
    """Each objective aggregated over the repeats (``how``: a key of AGGREGATES); a list per repeat in."""
    fn = AGGREGATES[how]
    return [float(fn([values[i] for values in per_repeat])) for i in range(len(per_repeat[0]))]


def first_values(per_repeat: Sequence[Sequence[float]]) -> List[float]:
    """The first objective of each repeat (what racing compares)."""
    return [values[0] for values in per_repeat]


def shown(per_repeat: Sequence[Sequence[float]]) -> Any:
    """repeat_values as stored: a value per repeat for one objective, a list per repeat for several."""
    return [v[0] if len(v) == 1 else list(v) for v in per_repeat]


def stored_values(attrs: Dict[str, Any]) -> List[List[float]]:
    """The finished repeats' values from a trial's attributes, a list per repeat."""
    return [list(v) if isinstance(v, (list, tuple)) else [v] for v in attrs.get(REPEAT_VALUES_ATTR) or []]
