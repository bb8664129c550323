"""Hydra's override grammar -> Optuna distributions.

The same strings as hydra-optuna-sweeper, with Hydra's meaning kept:

    choice(a, b, c)                  CategoricalDistribution; config-group options too (model/norm=choice(...))
    range(start, stop[, step])       IntDistribution / FloatDistribution with a step, stop EXCLUDED (as in Hydra)
    shuffle(range(...) or choice(...))  categorical over the values in the order written (the sampler orders them)
    interval(low, high)              FloatDistribution (Hydra makes interval ends floats)
    int(interval(low, high))         IntDistribution, both ends included
    tag(log, interval(low, high))    the same on a log scale (also tag(log, int(interval(...))))
    glob(...)                        refused: list the options with choice(...)
    anything else                    a fixed value, passed to every trial as it is

hydra-optuna-sweeper's deprecated ``search_space`` form ({name: {type, low, high, step, log,
choices}}) is read by ``distribution_from_config``.
"""

import decimal
import difflib
import logging
import math
import warnings
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, Glob, IntervalSweep, Override, RangeSweep, Transformer
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from omegaconf import DictConfig, ListConfig, OmegaConf

from .errors import squashed

log = logging.getLogger("sweeper.optuna_sweeper")


class SearchSpaceError(ValueError):
    """A search-space entry that cannot become an Optuna distribution."""


def _choices(override: Override, sweep: Any) -> List[Any]:
    """A choice's (or a shuffled range's) values in the order written, each as Hydra passes it (a list or dict
    as its text). A shuffle is left to the sampler, which picks the order anyway: Hydra's would give each
    invocation of a resumed study, and each worker, the choices in another order."""
    values = [Transformer.encode(v) for v in (sweep.range() if isinstance(sweep, RangeSweep) else sweep.list)]
    if not values:
        raise SearchSpaceError(f"{override.input_line}: an empty choice")
    return values


def _range_distribution(override: Override, sweep: RangeSweep) -> BaseDistribution:
    start, stop, step = sweep.start, sweep.stop, sweep.step
    if step == 0 or (stop - start) / step <= 0:
        raise SearchSpaceError(f"{override.input_line}: the range is empty (Hydra's range excludes its end)")
    if all(isinstance(v, int) for v in (start, stop, step)):
        n = len(range(start, stop, step))
        low, high = sorted((start, start + (n - 1) * step))
        return IntDistribution(low, high, step=abs(step))
    n = sum(1 for _ in sweep.range())  # as many values as Hydra's own float range gives (it stops before `stop`)
    # The last value in decimal, as written (0.9, not 0.8999999999999999): Optuna checks that the ends are a
    # whole number of steps apart in decimal, and would otherwise drop the last value to make them so.
    last = float(decimal.Decimal(str(start)) + (n - 1) * decimal.Decimal(str(step)))
    low, high = sorted((float(start), last))
    return FloatDistribution(low, high, step=abs(float(step)))


def distribution_from_override(override: Override) -> Any:
    """An Optuna distribution for a sweep override, or the fixed value (a string) for a plain one."""
    if not override.is_sweep_override():
        return override.get_value_element_as_str()
    value = override.value()
    if isinstance(value, Glob):
        raise SearchSpaceError(f"{override.input_line}: glob(...) is not supported by the Optuna sweeper; list the "
                               "options with choice(...)")
    if override.is_choice_sweep():
        assert isinstance(value, ChoiceSweep)
        return CategoricalDistribution(_choices(override, value))
    if override.is_range_sweep():
        assert isinstance(value, RangeSweep)
        if value.shuffle:
            return CategoricalDistribution(_choices(override, value))
        return _range_distribution(override, value)
    if override.is_interval_sweep():
        assert isinstance(value, IntervalSweep)
        low, high = value.start, value.end
        if not low < high:
            raise SearchSpaceError(f"{override.input_line}: interval needs low < high")
        log = "log" in value.tags
        if log and low <= 0:
            raise SearchSpaceError(f"{override.input_line}: a log interval needs low > 0")
        if isinstance(low, int) and isinstance(high, int):  # int(interval(...))
            return IntDistribution(low, high, log=log)
        return FloatDistribution(float(low), float(high), log=log)
    raise SearchSpaceError(f"{override.input_line}: this kind of sweep is not supported by the Optuna sweeper")


def distribution_from_config(name: str, node: Dict[str, Any]) -> BaseDistribution:
    """hydra-optuna-sweeper's ``search_space`` entry ({type: int|float|categorical, ...}) as a distribution."""
    kind = str(getattr(node.get("type"), "name", node.get("type")))
    try:
        if kind == "categorical":
            return CategoricalDistribution(list(node["choices"]))
        low, high, step, log = node["low"], node["high"], node.get("step"), bool(node.get("log", False))
        if kind == "int":
            return IntDistribution(int(low), int(high), step=int(step or 1), log=log)
        if kind == "float":
            return FloatDistribution(float(low), float(high), step=None if step is None else float(step), log=log)
    except (KeyError, TypeError, ValueError) as exc:
        raise SearchSpaceError(f"search_space.{name}: {squashed(exc)}") from None
    raise SearchSpaceError(f"search_space.{name}: type {kind!r} is not one of: int, float, categorical")


def describe(distribution: BaseDistribution) -> str:
    """A distribution in a few characters, for headers and messages: choice(a,b), int[1,9], float[0.1,1] log."""
    if isinstance(distribution, CategoricalDistribution):
        return f"choice({','.join(str(c) for c in distribution.choices)})"
    kind = "int" if isinstance(distribution, IntDistribution) else "float"
    step = f" step {distribution.step:g}" if distribution.step not in (None, 1) else ""
    log = " log" if distribution.log else ""
    return f"{kind}[{distribution.low:g},{distribution.high:g}]{step}{log}"


def search_space_from_overrides(arguments: List[str]) -> Tuple[Dict[str, BaseDistribution], Dict[str, str]]:
    """Split overrides into Optuna distributions (sweeps) and fixed values. Later entries win."""
    distributions: Dict[str, BaseDistribution] = {}
    fixed: Dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(arguments):
        key = override.get_key_element()
        value = distribution_from_override(override)
        distributions.pop(key, None)
        fixed.pop(key, None)
        if isinstance(value, BaseDistribution):
            distributions[key] = value
        else:
            fixed[key] = value
    return distributions, fixed


def check_group_choices(distributions: Dict[str, BaseDistribution],
                        options_of: Callable[[str], List[str]]) -> None:
    """Every choice a sweep gives a config group (``optimizer=choice(adam,sgd)``) is one of the group's options.

    ``options_of(group)`` lists a group's options, empty for a key that is not a group. Checked before
    any trial runs: a misspelt option would otherwise fail its trials one by one and silently narrow the
    search. Group keys may carry an override prefix (``+``, ``++``) or a package (``db@backup``).
    """
    for key, distribution in distributions.items():
        if not isinstance(distribution, CategoricalDistribution):
            continue
        group = key.lstrip("+~").split("@")[0]
        options = options_of(group)
        if not options:
            continue
        unknown = [str(c) for c in distribution.choices if c is not None and str(c) not in options]
        if unknown:
            raise SearchSpaceError(
                f"{key}={describe(distribution)}: {', '.join(map(repr, unknown))} "
                f"{'is not an option' if len(unknown) == 1 else 'are not options'} of config group '{group}'; "
                f"its options: {', '.join(options)}")


def check_keys_exist(keys: Iterable[str], config: Any, options_of: Callable[[str], List[str]]) -> None:
    """Every key a sweep sets (searched or fixed) is a key of the app's config, before any trial runs.

    A misspelt key (``model.widht``) would fail every trial as it is composed. Left alone: keys added
    on purpose (``+key``, ``++key``), config groups and packaged keys (``group@pkg``), Hydra's own
    (``hydra.*``), and keys under a group the sweep itself chooses (they may belong to another option).
    """
    keys = list(keys)
    groups = {k.lstrip("+~").split("@")[0] for k in keys if options_of(k.lstrip("+~").split("@")[0])}
    chosen = {g.replace("/", ".") for g in groups}
    for key in keys:
        if key.startswith(("+", "~")) or "@" in key or "/" in key or key.startswith("hydra.") or key in groups:
            continue
        if any(key == c or key.startswith(c + ".") for c in chosen):
            continue
        if _has_key(config, key):
            continue
        near = nearest_key(key, config)
        hint = f"did you mean {near}? " if near else ""
        raise SearchSpaceError(f"{key} is not a key of the app's config; {hint}(to add a new key: +{key}=...)")


def nearest_key(key: str, config: Any) -> Optional[str]:
    """The app's config key spelt most like ``key`` (Hydra's own keys aside), if any is close."""
    known = [k for k in _leaf_keys(config) if k != "hydra" and not k.startswith("hydra.")]
    near = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return near[0] if near else None


def _has_key(config: Any, key: str) -> bool:
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(config, parent, default=None) if parent else config
    if isinstance(node, DictConfig):
        return leaf in node
    if isinstance(node, ListConfig):
        return leaf.isdigit() and int(leaf) < len(node)
    return False


def _leaf_keys(node: Any, prefix: str = "") -> List[str]:
    out = []
    for k in node.keys() if isinstance(node, DictConfig) else []:
        child = node._get_node(k)
        path = f"{prefix}{k}"
        out.append(path)
        if isinstance(child, DictConfig):
            out.extend(_leaf_keys(child, path + "."))
    return out


def grid_choices(distributions: Dict[str, BaseDistribution]) -> Dict[str, List[Any]]:
    """The search space as the lists GridSampler wants; only discrete distributions have one."""
    grid: Dict[str, List[Any]] = {}
    for name, d in distributions.items():
        if isinstance(d, CategoricalDistribution):
            grid[name] = list(d.choices)
        elif isinstance(d, IntDistribution) and not d.log:
            grid[name] = list(range(d.low, d.high + 1, d.step))
        elif isinstance(d, FloatDistribution) and d.step is not None:
            n = int(round((d.high - d.low) / d.step)) + 1
            grid[name] = [d.low + i * d.step for i in range(n)]
        else:
            raise SearchSpaceError(f"{name}: the grid sampler needs choice(...) or range(...), not {d}")
    return grid


def space_size(distributions: Dict[str, BaseDistribution]) -> Optional[int]:
    """How many distinct points a search space has; None when it is continuous."""
    try:
        grid = grid_choices(distributions)
    except SearchSpaceError:
        return None
    return math.prod(len(values) for values in grid.values())


def format_override(name: str, value: Any) -> str:
    """``name=value`` that Hydra parses back to the same value."""
    if value is None:
        return f"{name}=null"
    if isinstance(value, bool):
        return f"{name}={'true' if value else 'false'}"
    return f"{name}={value}"


def sweep_space(params: Optional[Mapping[str, str]], search_space: Optional[Any],
                arguments: List[str]) -> Tuple[Dict[str, BaseDistribution], Dict[str, str]]:
    """A sweep's distributions and fixed values: ``hydra.sweeper.params``, then the command line's
    sweep overrides (later entries win), then the deprecated ``search_space`` entries not given otherwise."""
    entries = [f"{k}={v}" for k, v in (params or {}).items()]
    distributions, fixed = search_space_from_overrides(entries + list(arguments))
    if search_space:
        warnings.warn("hydra.sweeper.search_space is deprecated (as in hydra-optuna-sweeper): use "
                      "hydra.sweeper.params with the override grammar", UserWarning, stacklevel=2)
        log.warning("hydra.sweeper.search_space is deprecated: use hydra.sweeper.params")
        nodes = OmegaConf.to_container(search_space, resolve=True) if OmegaConf.is_config(search_space) else search_space
        for name, node in nodes.items():
            distributions.setdefault(name, distribution_from_config(name, node))
    return distributions, fixed
