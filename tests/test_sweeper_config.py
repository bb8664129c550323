"""Every sampler and pruner the sweeper offers can be made and drives a study (in memory, no training)."""

import optuna
import pytest
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

import sweeper.config  # noqa: F401  registers the groups
from sweeper.optuna_sweeper import BudgetOptunaSweeper

optuna.logging.set_verbosity(optuna.logging.WARNING)
SPACE = {
    "model/norm": CategoricalDistribution(["bn_relu", "relu_bn"]),
    "trainer.batch_size": IntDistribution(64, 256, step=64),
    "optim.lr": FloatDistribution(0.01, 0.3, step=0.01),
}


def node(group: str, name: str):
    return OmegaConf.structured(ConfigStore.instance().load(f"hydra/sweeper/{group}/{name}.yaml").node)


def sweeper_with(sampler: str = "tpe", pruner: str = "median") -> BudgetOptunaSweeper:
    cfg = OmegaConf.merge(
        OmegaConf.structured(sweeper.config.OptunaBudgetSweeperConf),
        {"sampler": node("sampler", sampler), "pruner": node("pruner", pruner)},
    )
    kwargs = {k: v for k, v in cfg.items() if k not in ("_target_", "_recursive_", "defaults")}
    return BudgetOptunaSweeper(**kwargs)


def test_sweeper_group_lists_exactly_the_documented_options():
    cs = ConfigStore.instance()
    assert sorted(n[:-5] for n in cs.list("hydra/sweeper/sampler")) == ["cmaes", "gp", "grid", "nsgaii", "qmc", "random", "tpe"]
    assert sorted(n[:-5] for n in cs.list("hydra/sweeper/pruner")) == ["hyperband", "median", "none", "percentile", "successive_halving"]
    assert "optuna_budget.yaml" in cs.list("hydra/sweeper")


def test_published_plugin_keys_are_kept():
    keys = set(OmegaConf.structured(sweeper.config.OptunaBudgetSweeperConf))
    assert keys >= {"sampler", "direction", "storage", "study_name", "n_trials", "n_jobs", "max_failure_rate",
                    "params", "custom_search_space"}


@pytest.mark.parametrize("sampler", ["tpe", "random", "gp", "cmaes", "nsgaii", "qmc", "grid"])
def test_every_sampler_proposes_trials_in_the_space(sampler):
    made = sweeper_with(sampler=sampler)._make_sampler(SPACE)
    study = optuna.create_study(direction="maximize", sampler=made)
    for _ in range(3):
        trial = study.ask(SPACE)
        assert set(trial.params) == set(SPACE)
        study.tell(trial, trial.params["optim.lr"])


@pytest.mark.parametrize("pruner", ["median", "percentile", "successive_halving", "hyperband", "none"])
def test_every_pruner_can_be_made(pruner):
    made = sweeper_with(pruner=pruner)._make_pruner()
    study = optuna.create_study(direction="maximize", pruner=made)
    trial = study.ask()
    trial.report(0.5, 1)
    assert trial.should_prune() in (True, False)


def test_tpe_default_is_seeded():
    assert node("sampler", "tpe").seed == 42
