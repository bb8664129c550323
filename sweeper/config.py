"""Typed schemas of the sweeper, registered in Hydra's ConfigStore as ``hydra/sweeper=optuna_budget``.

The keys of hydra-optuna-sweeper 1.3 are kept (sampler, direction, storage, study_name, n_trials,
n_jobs, max_failure_rate, search_space, params, custom_search_space) with its defaults, and so
are its sampler groups and their keys, so a config written for it works after changing the
sweeper's name; README's "Differences from hydra-optuna-sweeper" lists where we differ on
purpose. Each sampler and pruner schema lists every keyword its Optuna class takes.

This module imports Hydra and OmegaConf only: Hydra's plugin scan imports it on every run.
"""

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

SWEEPER_NAME = "optuna_budget"
SWEEPER_TARGET = "hydra_plugins.optuna_budget_sweeper.BudgetOptunaSweeper"
STORAGE_PATIENCE_S = 120  # storage_patience's default: how long workers and jobs wait for an unreachable database
DEFAULT_STORAGE = "sqlite:///outputs/sweeps.db"  # relative to the directory the sweep is started in
STORAGE_ENV = "SWEEP_STORAGE"  # overrides the default; keeps a database password out of commands and configs
LEGACY_STORAGE_ENV = "MNIST_SWEEP_STORAGE"  # the name this repo gave it first: still read, after STORAGE_ENV


def storage_from_env() -> str:
    """The storage URL a sweep uses by default, as its config's interpolation resolves it."""
    return os.environ.get(STORAGE_ENV) or os.environ.get(LEGACY_STORAGE_ENV) or DEFAULT_STORAGE


@dataclass
class SamplerConf:
    _target_: str = MISSING
    seed: Optional[int] = None


@dataclass
class TPESamplerConf(SamplerConf):
    _target_: str = "optuna.samplers.TPESampler"
    seed: Optional[int] = 42  # seeded: the same command proposes the same trials
    consider_prior: Optional[bool] = None  # None: Optuna's default (these four are deprecated in Optuna 5)
    prior_weight: Optional[float] = None
    consider_magic_clip: Optional[bool] = None
    consider_endpoints: Optional[bool] = None
    n_startup_trials: int = 10  # random trials before TPE models the space
    n_ei_candidates: int = 24
    gamma: Optional[Any] = None  # a callable, by _target_
    weights: Optional[Any] = None
    multivariate: bool = True  # axes interact (say widths x multiplier x pool)
    group: bool = True  # conditional spaces; only with multivariate (multivariate=false turns it off)
    warn_independent_sampling: Optional[bool] = None
    constant_liar: bool = True  # parallel workers do not propose the same point
    constraints_func: Optional[Any] = None  # null: the sweeper's budget constraint where a budget is set


@dataclass
class MOTPESamplerConf(SamplerConf):
    """hydra-optuna-sweeper's ``motpe``: Optuna 4 removed MOTPESampler; TPESampler handles several objectives."""

    _target_: str = "sweeper.samplers.motpe"
    consider_prior: Optional[bool] = None
    prior_weight: Optional[float] = None
    consider_magic_clip: Optional[bool] = None
    consider_endpoints: Optional[bool] = None
    n_startup_trials: int = 10
    n_ehvi_candidates: int = 24  # becomes TPESampler's n_ei_candidates


@dataclass
class RandomSamplerConf(SamplerConf):
    _target_: str = "optuna.samplers.RandomSampler"


@dataclass
class GPSamplerConf(SamplerConf):
    _target_: str = "optuna.samplers.GPSampler"
    independent_sampler: Optional[Any] = None
    n_startup_trials: int = 10
    deterministic_objective: bool = False
    constraints_func: Optional[Any] = None
    warn_independent_sampling: bool = True


@dataclass
class CmaEsSamplerConf(SamplerConf):
    _target_: str = "optuna.samplers.CmaEsSampler"
    x0: Optional[Dict[str, Any]] = None
    sigma0: Optional[float] = None
    n_startup_trials: int = 1
    independent_sampler: Optional[Any] = None
    warn_independent_sampling: bool = False  # categorical axes are always sampled independently
    consider_pruned_trials: bool = False
    restart_strategy: Optional[str] = None
    popsize: Optional[int] = None
    inc_popsize: int = -1
    use_separable_cma: bool = False
    with_margin: bool = False
    lr_adapt: bool = False
    source_trials: Optional[Any] = None


@dataclass
class NSGAIISamplerConf(SamplerConf):
    _target_: str = "optuna.samplers.NSGAIISampler"
    population_size: int = 20  # small: trials are expensive (Optuna's default: 50)
    mutation: Optional[Any] = None
    mutation_prob: Optional[float] = None
    crossover: Optional[Any] = None
    crossover_prob: float = 0.9
    swapping_prob: float = 0.5
    constraints_func: Optional[Any] = None
    elite_population_selection_strategy: Optional[Any] = None
    child_generation_strategy: Optional[Any] = None
    after_trial_strategy: Optional[Any] = None


@dataclass
class NSGAIIISamplerConf(SamplerConf):
    """NSGA-III: NSGA-II's keys, and reference points that spread the front over 3 or more objectives."""

    _target_: str = "optuna.samplers.NSGAIIISampler"
    population_size: int = 20  # small: trials are expensive (Optuna's default: 50)
    mutation: Optional[Any] = None  # e.g. {_target_: optuna.samplers.nsgaii.PolynomialMutation} (Optuna 5)
    mutation_prob: Optional[float] = None
    crossover: Optional[Any] = None  # e.g. {_target_: optuna.samplers.nsgaii.SBXCrossover, eta: 20}
    crossover_prob: float = 0.9
    swapping_prob: float = 0.5
    constraints_func: Optional[Any] = None
    reference_points: Optional[List[Any]] = None  # one point per row, one column per objective; null: Das-Dennis
    dividing_parameter: int = 3  # divisions per objective of the default (Das-Dennis) reference points
    elite_population_selection_strategy: Optional[Any] = None
    child_generation_strategy: Optional[Any] = None
    after_trial_strategy: Optional[Any] = None


@dataclass
class QMCSamplerConf(SamplerConf):
    _target_: str = "optuna.samplers.QMCSampler"
    qmc_type: str = "sobol"
    scramble: bool = True
    independent_sampler: Optional[Any] = None
    warn_asynchronous_seeding: bool = True
    warn_independent_sampling: bool = False


@dataclass
class GridSamplerConf(SamplerConf):
    _target_: str = "optuna.samplers.GridSampler"  # the grid is built from the search space
    _partial_: bool = True  # as upstream: search_space is filled in by the sweeper


@dataclass
class PrunerConf:
    _target_: str = MISSING


@dataclass
class MedianPrunerConf(PrunerConf):
    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5  # never prune before five trials have finished
    n_warmup_steps: int = 3  # nor before step 3 (for an epoch reporter: epoch 3); first epochs say little
    interval_steps: int = 1
    n_min_trials: int = 1


@dataclass
class PercentilePrunerConf(PrunerConf):
    _target_: str = "optuna.pruners.PercentilePruner"
    percentile: float = 25.0  # prune the worst quarter at each step
    n_startup_trials: int = 5
    n_warmup_steps: int = 3
    interval_steps: int = 1
    n_min_trials: int = 1


@dataclass
class SuccessiveHalvingPrunerConf(PrunerConf):
    _target_: str = "optuna.pruners.SuccessiveHalvingPruner"
    min_resource: Any = 2  # steps before the first rung
    reduction_factor: int = 3
    min_early_stopping_rate: int = 0
    bootstrap_count: int = 0


@dataclass
class HyperbandPrunerConf(PrunerConf):
    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 2
    max_resource: Any = "auto"  # the steps of the first finished trial
    reduction_factor: int = 3
    bootstrap_count: int = 0


@dataclass
class NopPrunerConf(PrunerConf):
    _target_: str = "optuna.pruners.NopPruner"


@dataclass
class BudgetConf:
    """Rejects trials before they cost anything: off unless ``measure`` is set.

    Each trial's config is composed and ``measure(cfg)`` called on it; a value over ``max`` is
    recorded (PRUNED, user attribute ``rejected: over_budget``), told to the sampler as a
    constraint, never launched and not counted toward n_trials.
    """

    measure: Optional[str] = None  # dotted path of fn(cfg) -> number, called on the trial's composed config
    max: Any = None  # a number, or an interpolation into the app's config (resolved per trial); null: record only
    name: str = "budget_value"  # the user attribute the measured value is stored under (e.g. n_params)


@dataclass
class RepeatsConf:
    """Each trial run ``n`` times, ``key`` set to each of ``values``; its value the ``aggregate`` (sweeper/repeats.py)."""

    n: int = 1  # 1: one job per trial, as without repeats
    key: str = "seed"  # the config key each repeat sets
    values: Optional[List[Any]] = None  # null: the config's value of key, plus 0, 1, ..., n-1
    aggregate: str = "mean"  # mean | min | max | median, of each objective over the repeats
    race: bool = False  # stop a trial between repeats once it can no longer reach the best completed trial
    bound: Optional[float] = None  # the best value one repeat can give (100 for accuracy %): lets mean race


@dataclass
class CheckpointConf:
    """Where jobs' checkpoints are kept, so a stopped trial resumes where it stopped (sweeper/checkpoints.py)."""

    store: Any = None  # null: beside a SQLite/journal file (sweeps.checkpoints/), else outputs/checkpoints; a path; s3://bucket[/prefix]; {_target_: ...}
    keep_best: bool = False  # keep the best trial's last checkpoint when it finishes (others are removed)


@dataclass
class OptunaBudgetSweeperConf:
    _target_: str = SWEEPER_TARGET
    _recursive_: bool = False  # the sweeper instantiates sampler and pruner itself (constraints, grid)
    defaults: List[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "median"}])

    # hydra-optuna-sweeper's keys, with its defaults
    sampler: Any = MISSING
    direction: Any = "minimize"  # or a list, e.g. [maximize, minimize]
    storage: Optional[str] = f"${{oc.env:{STORAGE_ENV},${{oc.env:{LEGACY_STORAGE_ENV},{DEFAULT_STORAGE}}}}}"  # any Optuna URL, journal:///file.log, or null
    study_name: Optional[str] = None  # a sweep resumes the study of this name; null: the app's job name
    n_trials: int = 20  # trained trials the study should hold in total (rejected ones do not count)
    n_jobs: int = 1  # trials at once on this machine (worker processes; needs a storage they share)
    max_failure_rate: float = 0.0  # stop when failed / finished trained trials exceeds this
    search_space: Optional[Dict[str, Any]] = None  # deprecated upstream form: {name: {type, low, high, ...}}
    params: Optional[Dict[str, str]] = None  # search space in Hydra's override grammar
    custom_search_space: Optional[str] = None  # dotted path of fn(cfg, trial) adding suggest_* params

    # ours
    pruner: Any = MISSING
    objectives: Optional[List[str]] = None  # a name per direction: keys of a returned dict, else user attributes
    metrics: Optional[List[str]] = None  # the names the app reports; given, objectives are checked against it at start
    budget: BudgetConf = field(default_factory=BudgetConf)
    threads_key: Optional[str] = None  # config key the sweeper sets to each job's CPU thread share (app opts in)
    allow_search_space_change: bool = False  # resume a study with a search space other than the one it began with
    max_rejected_streak: int = 200  # stop when this many trials in a row are over budget
    heartbeat_interval: int = 20  # seconds between a running trial's heartbeats
    grace_period: int = 120  # a RUNNING trial without a heartbeat this long is marked failed
    retry_stale_trials: bool = False  # re-queue a trial failed by a killed worker, same parameters
    threads_per_job: Optional[int] = None  # CPU threads per trial (with threads_key); null: cores / n_jobs
    storage_patience: int = STORAGE_PATIENCE_S  # seconds workers wait for an unreachable database before stopping
    repeats: RepeatsConf = field(default_factory=RepeatsConf)
    callbacks: Optional[List[Any]] = None  # Optuna study callbacks, each {_target_: ..., args}: fn(study, trial) after each tell
    n_complete_trials: Optional[int] = None  # also end once this many trials completed (pruned ones say little)
    checkpoint: CheckpointConf = field(default_factory=CheckpointConf)


SAMPLERS = {
    "tpe": TPESamplerConf, "motpe": MOTPESamplerConf, "random": RandomSamplerConf, "gp": GPSamplerConf,
    "cmaes": CmaEsSamplerConf, "nsgaii": NSGAIISamplerConf, "nsgaiii": NSGAIIISamplerConf, "qmc": QMCSamplerConf,
    "grid": GridSamplerConf,
}
PRUNERS = {
    "median": MedianPrunerConf, "percentile": PercentilePrunerConf,
    "successive_halving": SuccessiveHalvingPrunerConf, "hyperband": HyperbandPrunerConf, "none": NopPrunerConf,
}


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(group="hydra/sweeper", name=SWEEPER_NAME, node=OptunaBudgetSweeperConf, provider="optuna_budget_sweeper")
    for name, node in SAMPLERS.items():
        cs.store(group="hydra/sweeper/sampler", name=name, node=node, provider="optuna_budget_sweeper")
    for name, node in PRUNERS.items():
        cs.store(group="hydra/sweeper/pruner", name=name, node=node, provider="optuna_budget_sweeper")


register_configs()
