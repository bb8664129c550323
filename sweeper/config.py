"""Typed schemas of the sweeper, registered in Hydra's ConfigStore as ``hydra/sweeper=optuna_budget``.

The keys of hydra-optuna-sweeper are kept (sampler, direction, storage, study_name, n_trials,
n_jobs, max_failure_rate, params, custom_search_space), so a config written for it works after
changing the sweeper's name; the rest are ours.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

SWEEPER_NAME = "optuna_budget"
DEFAULT_STORAGE = "sqlite:///outputs/sweeps.db"  # relative to the directory the sweep is started in
STORAGE_ENV = "MNIST_SWEEP_STORAGE"  # overrides the default; keeps a database password out of commands and configs


@dataclass
class SamplerConf:
    _target_: str = MISSING
    seed: Optional[int] = None


@dataclass
class TPESamplerConf(SamplerConf):
    _target_: str = "optuna.samplers.TPESampler"
    seed: Optional[int] = 42  # seeded: the same command proposes the same trials
    n_startup_trials: int = 10  # random trials before TPE models the space
    multivariate: bool = True  # architecture axes interact (widths x multiplier x pool)
    group: bool = True  # conditional spaces: params that only some choices use
    constant_liar: bool = True  # parallel workers do not propose the same point


@dataclass
class RandomSamplerConf(SamplerConf):
    _target_: str = "optuna.samplers.RandomSampler"


@dataclass
class GPSamplerConf(SamplerConf):
    _target_: str = "optuna.samplers.GPSampler"
    n_startup_trials: int = 10


@dataclass
class CmaEsSamplerConf(SamplerConf):
    _target_: str = "optuna.samplers.CmaEsSampler"
    n_startup_trials: int = 1
    warn_independent_sampling: bool = False  # categorical axes are always sampled independently


@dataclass
class NSGAIISamplerConf(SamplerConf):
    _target_: str = "optuna.samplers.NSGAIISampler"
    population_size: int = 20  # small: our trials are expensive


@dataclass
class QMCSamplerConf(SamplerConf):
    _target_: str = "optuna.samplers.QMCSampler"
    qmc_type: str = "sobol"
    scramble: bool = True
    warn_independent_sampling: bool = False


@dataclass
class GridSamplerConf(SamplerConf):
    _target_: str = "optuna.samplers.GridSampler"  # the grid is built from the search space


@dataclass
class PrunerConf:
    _target_: str = MISSING


@dataclass
class MedianPrunerConf(PrunerConf):
    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5  # never prune before five trials have finished
    n_warmup_steps: int = 3  # nor before epoch 3 (steps are epochs, from 1): the first epochs of one-cycle runs say little
    interval_steps: int = 1


@dataclass
class PercentilePrunerConf(PrunerConf):
    _target_: str = "optuna.pruners.PercentilePruner"
    percentile: float = 25.0  # prune the worst quarter at each epoch
    n_startup_trials: int = 5
    n_warmup_steps: int = 3


@dataclass
class SuccessiveHalvingPrunerConf(PrunerConf):
    _target_: str = "optuna.pruners.SuccessiveHalvingPruner"
    min_resource: Any = 2  # epochs before the first rung
    reduction_factor: int = 3


@dataclass
class HyperbandPrunerConf(PrunerConf):
    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 2
    max_resource: Any = "auto"  # the epochs of the first finished trial
    reduction_factor: int = 3


@dataclass
class NopPrunerConf(PrunerConf):
    _target_: str = "optuna.pruners.NopPruner"


@dataclass
class OptunaBudgetSweeperConf:
    _target_: str = "hydra_plugins.mnist_arch_sweeper.BudgetOptunaSweeper"
    _recursive_: bool = False  # the sweeper instantiates sampler and pruner itself (constraints, grid)
    defaults: List[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "median"}])

    sampler: Any = MISSING
    pruner: Any = MISSING
    direction: Any = "maximize"  # or a list, e.g. [maximize, minimize] with objectives
    storage: Optional[str] = f"${{oc.env:{STORAGE_ENV},{DEFAULT_STORAGE}}}"  # any Optuna URL, or journal:///path/file.log
    study_name: str = "mnist"  # a sweep resumes the study of this name in the storage
    n_trials: int = 20  # trained trials the study should hold in total (rejected ones do not count)
    n_jobs: int = 1  # trials at once on this machine (worker processes)
    max_failure_rate: float = 0.0  # stop when failed / finished trials exceeds this
    params: Optional[Dict[str, str]] = None  # search space in Hydra's override grammar
    custom_search_space: Optional[str] = None  # dotted path of fn(cfg, trial) adding suggest_* params

    objectives: Optional[List[str]] = None  # job metrics, one per direction; null: the job's return value
    max_rejected_streak: int = 200  # stop when this many trials in a row are over budget
    heartbeat_interval: int = 20  # seconds between a running trial's heartbeats
    grace_period: int = 120  # a RUNNING trial without a heartbeat this long is marked failed
    retry_stale_trials: bool = False  # re-queue a trial failed by a killed worker, same parameters
    threads_per_job: Optional[int] = None  # CPU threads per trial; null: cores / n_jobs
    storage_patience: int = 120  # seconds workers wait for an unreachable database before stopping


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(group="hydra/sweeper", name=SWEEPER_NAME, node=OptunaBudgetSweeperConf, provider="mnist_arch_sweep")
    for name, node in {
        "tpe": TPESamplerConf, "random": RandomSamplerConf, "gp": GPSamplerConf, "cmaes": CmaEsSamplerConf,
        "nsgaii": NSGAIISamplerConf, "qmc": QMCSamplerConf, "grid": GridSamplerConf,
    }.items():
        cs.store(group="hydra/sweeper/sampler", name=name, node=node, provider="mnist_arch_sweep")
    for name, node in {
        "median": MedianPrunerConf, "percentile": PercentilePrunerConf,
        "successive_halving": SuccessiveHalvingPrunerConf, "hyperband": HyperbandPrunerConf, "none": NopPrunerConf,
    }.items():
        cs.store(group="hydra/sweeper/pruner", name=name, node=node, provider="mnist_arch_sweep")


register_configs()
