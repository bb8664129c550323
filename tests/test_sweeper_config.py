"""Samplers and pruners from their config groups, as hydra-optuna-sweeper configs name them (in memory, no training)."""

import logging

import optuna
import pytest
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

import sweeper.config  # noqa: F401  registers the groups
from sweeper.errors import SweepError
from sweeper.samplers import grid_size, make_pruner, make_sampler, same_start
from sweeper.storage import check_search_space

optuna.logging.set_verbosity(optuna.logging.WARNING)
SPACE = {
    "model/norm": CategoricalDistribution(["bn_relu", "relu_bn"]),
    "trainer.batch_size": IntDistribution(64, 256, step=64),
    "optim.lr": FloatDistribution(0.01, 0.3, step=0.01),
}

# hydra-optuna-sweeper 1.3's sampler groups and the keys each schema has there: all must be accepted.
UPSTREAM_KEYS = {
    "tpe": {"seed", "consider_prior", "prior_weight", "consider_magic_clip", "consider_endpoints", "n_startup_trials",
            "n_ei_candidates", "multivariate", "warn_independent_sampling"},
    "random": {"seed"},
    "cmaes": {"seed", "x0", "sigma0", "independent_sampler", "warn_independent_sampling", "consider_pruned_trials",
              "restart_strategy", "inc_popsize", "use_separable_cma", "source_trials"},
    "nsgaii": {"seed", "population_size", "mutation_prob", "crossover_prob", "swapping_prob", "constraints_func"},
    # the published plugin's main (2026): NSGA-III, with crossover and reference points
    "nsgaiii": {"seed", "population_size", "mutation_prob", "crossover", "crossover_prob", "swapping_prob",
                "constraints_func", "reference_points", "dividing_parameter"},
    "motpe": {"seed", "consider_prior", "prior_weight", "consider_magic_clip", "consider_endpoints",
              "n_startup_trials", "n_ehvi_candidates"},
    "grid": set(),
}


def node(group: str, name: str):
    return OmegaConf.structured(ConfigStore.instance().load(f"hydra/sweeper/{group}/{name}.yaml").node)


def test_sweeper_groups_list_exactly_the_documented_options():
    cs = ConfigStore.instance()
    assert sorted(n[:-5] for n in cs.list("hydra/sweeper/sampler")) == [
        "cmaes", "gp", "grid", "motpe", "nsgaii", "nsgaiii", "qmc", "random", "tpe"]
    assert sorted(n[:-5] for n in cs.list("hydra/sweeper/pruner")) == [
        "hyperband", "median", "none", "percentile", "successive_halving"]
    assert "optuna_budget.yaml" in cs.list("hydra/sweeper")


def test_published_plugin_keys_and_defaults_are_kept():
    cfg = OmegaConf.structured(sweeper.config.OptunaBudgetSweeperConf)
    assert set(cfg) >= {"sampler", "direction", "storage", "study_name", "n_trials", "n_jobs", "max_failure_rate",
                        "search_space", "params", "custom_search_space"}
    assert cfg.direction == "minimize" and cfg.study_name is None and cfg.n_trials == 20


@pytest.mark.parametrize("group, keys", sorted(UPSTREAM_KEYS.items()))
def test_every_key_of_the_published_sampler_groups_is_accepted(group, keys):
    assert set(node("sampler", group)) >= keys | {"_target_"}


@pytest.mark.parametrize("sampler", ["tpe", "motpe", "random", "gp", "cmaes", "nsgaii", "nsgaiii", "qmc", "grid"])
def test_every_sampler_proposes_trials_in_the_space(sampler):
    made = make_sampler(node("sampler", sampler), SPACE, offset=0)
    study = optuna.create_study(direction="maximize", sampler=made)
    seen = []
    for _ in range(3):
        trial = study.ask(SPACE)
        assert set(trial.params) == set(SPACE)
        assert all(SPACE[k]._contains(SPACE[k].to_internal_repr(v)) for k, v in trial.params.items())
        seen.append(trial.params)
        study.tell(trial, trial.params["optim.lr"])
    if sampler == "grid":
        assert grid_size(made) == 2 * 4 * 30 and len({str(p) for p in seen}) == 3  # no point twice


def test_every_sampler_keyword_reaches_the_sampler():
    cfg = node("sampler", "tpe")
    cfg.n_ei_candidates, cfg.n_startup_trials, cfg.consider_endpoints = 7, 3, True
    made = make_sampler(cfg, SPACE, offset=0)
    assert made._n_ei_candidates == 7 and made._n_startup_trials == 3
    nsga = node("sampler", "nsgaii")
    nsga.mutation_prob, nsga.crossover_prob, nsga.swapping_prob = 0.2, 0.7, 0.4
    made = make_sampler(nsga, SPACE, offset=0)
    assert made._child_generation_strategy._crossover_prob == 0.7
    assert made._child_generation_strategy._swapping_prob == 0.4
    cma = node("sampler", "cmaes")
    cma.sigma0, cma.use_separable_cma, cma.consider_pruned_trials = 0.3, True, True
    made = make_sampler(cma, {"x": FloatDistribution(0, 1)}, offset=0)
    assert made._sigma0 == 0.3 and made._use_separable_cma and made._consider_pruned_trials


@pytest.mark.parametrize("group", ["nsgaii", "nsgaiii"])
def test_nsga_crossover_and_mutation_are_built_from_their_targets(group):
    cfg = node("sampler", group)
    cfg.crossover = {"_target_": "optuna.samplers.nsgaii.SBXCrossover", "eta": 7.0}
    cfg.mutation = {"_target_": "optuna.samplers.nsgaii.PolynomialMutation", "eta": 5.0}
    cfg.population_size = 6
    made = make_sampler(cfg, SPACE, offset=0)
    child = made._child_generation_strategy
    assert isinstance(child._crossover, optuna.samplers.nsgaii.SBXCrossover) and child._crossover._eta == 7.0
    assert isinstance(child._mutation, optuna.samplers.nsgaii.PolynomialMutation) and child._mutation._eta == 5.0
    assert made._population_size == 6


def test_nsgaiii_takes_reference_points_and_the_dividing_parameter():
    cfg = node("sampler", "nsgaiii")
    cfg.reference_points = [[1, 0], [0.5, 0.5], [0, 1]]  # ints too: YAML writes 1, not 1.0
    cfg.dividing_parameter = 5
    made = make_sampler(cfg, SPACE, offset=0)
    assert isinstance(made, optuna.samplers.NSGAIIISampler)
    elite = made._elite_population_selection_strategy
    assert [list(map(float, p)) for p in elite._reference_points] == [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    assert elite._dividing_parameter == 5


def test_motpe_is_tpe_with_a_deprecation_line(caplog):
    cfg = node("sampler", "motpe")
    cfg.n_ehvi_candidates, cfg.n_startup_trials = 11, 4
    with caplog.at_level(logging.WARNING):
        made = make_sampler(cfg, SPACE, offset=0)
    assert isinstance(made, optuna.samplers.TPESampler) and made._n_ei_candidates == 11
    assert made._n_startup_trials == 4  # every other keyword passed on
    assert [r.getMessage() for r in caplog.records if "motpe" in r.getMessage()] == [
        "hydra/sweeper/sampler=motpe is deprecated: Optuna removed MOTPESampler; TPESampler, which handles several "
        "objectives, is used (hydra/sweeper/sampler=tpe)"]
    from sweeper.samplers import motpe

    assert motpe()._n_ei_candidates == 24  # the published config's default


def test_multivariate_false_turns_tpe_group_off():
    cfg = node("sampler", "tpe")
    cfg.multivariate = False
    made = make_sampler(cfg, SPACE, offset=0)
    assert made._multivariate is False and made._group is False


def test_a_target_swap_leaves_out_the_groups_leftover_keys_with_one_line(caplog):
    cfg = node("sampler", "tpe")
    cfg._target_ = "optuna.samplers.RandomSampler"
    with caplog.at_level(logging.WARNING):
        made = make_sampler(cfg, SPACE, offset=0)
    assert isinstance(made, optuna.samplers.RandomSampler)
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("hydra.sweeper.sampler: RandomSampler takes no consider_endpoints, consider_magic_clip")
    assert line.endswith("; left out")


def test_the_seed_moves_on_with_the_offset_and_a_new_study_keeps_the_configured_one():
    cfg = node("sampler", "random")
    cfg.seed = 5
    first = [make_sampler(cfg, SPACE, offset=k)._rng.rng.randint(1 << 30) for k in (0, 0, 1, 3)]
    assert first[0] == first[1] and len(set(first)) == 3
    assert first[0] == optuna.samplers.RandomSampler(seed=5)._rng.rng.randint(1 << 30)


def test_a_new_study_that_would_repeat_another_studys_first_points_is_named():
    storage = optuna.storages.InMemoryStorage()
    tpe = node("sampler", "tpe")
    tpe.seed = 42

    def begun(name, cfg, space=SPACE, trials=3):
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
        check_search_space(study, space, allow_change=False)
        twin = same_start(study, cfg)
        study.sampler = make_sampler(cfg, space, offset=0)
        for _ in range(trials):
            study.tell(study.ask(space), 0.0)
        return twin, [t.params for t in study.trials]

    assert begun("first", tpe)[0] is None
    twin, points = begun("second", tpe)
    assert twin == "first" and points == begun("second_copy", tpe)[1]  # what it says is true: the same points
    other_seed = tpe.copy()
    other_seed.seed = 43
    twin, points = begun("other_seed", other_seed)
    assert twin is None and points != begun("again", tpe)[1]
    assert begun("other_space", tpe, {**SPACE, "optim.lr": FloatDistribution(0.01, 0.2, step=0.01)})[0] is None
    for name in ("random", "nsgaii", "gp"):  # they start from RandomSampler(seed)'s points, as TPE does
        other = node("sampler", name)
        other.seed = 42
        twin, points = begun(f"{name}_after_tpe", other)
        assert twin == "first" and points == begun(f"tpe_before_{name}", tpe)[1], name  # named, and truly the same points
    for name in ("cmaes", "qmc"):  # their own start: not named
        other = node("sampler", name)
        other.seed = 42
        twin, points = begun(f"{name}_after_tpe", other)
        assert twin is None and points != begun(f"tpe_beside_{name}", tpe)[1], name
    unseeded = tpe.copy()
    unseeded.seed = None
    assert begun("unseeded", unseeded)[0] is None
    resumed = optuna.load_study(study_name="second", storage=storage)
    assert same_start(resumed, tpe) is None  # it has trials: resuming moves the seed on


@pytest.mark.parametrize("target, message", [
    ("optuna.samplers.NoSuchSampler", "hydra.sweeper.sampler._target_='optuna.samplers.NoSuchSampler' cannot be imported"),
])
def test_a_sampler_that_cannot_be_made_is_one_line(target, message):
    cfg = node("sampler", "random")
    cfg._target_ = target
    with pytest.raises(SweepError, match=message):
        make_sampler(cfg, SPACE, offset=0)


@pytest.mark.parametrize("pruner, cls", [
    ("median", optuna.pruners.MedianPruner), ("percentile", optuna.pruners.PercentilePruner),
    ("successive_halving", optuna.pruners.SuccessiveHalvingPruner), ("hyperband", optuna.pruners.HyperbandPruner),
    ("none", optuna.pruners.NopPruner),
])
def test_every_pruner_is_made_from_its_group(pruner, cls):
    made = make_pruner(node("pruner", pruner))
    assert type(made) is cls


def test_the_median_pruner_stops_a_trial_below_the_median_after_its_warmup():
    made = make_pruner(node("pruner", "median"))  # 5 startup trials, warm-up 3 steps
    study = optuna.create_study(direction="maximize", pruner=made)
    for _ in range(5):
        good = study.ask()
        for step in range(1, 6):
            good.report(0.9, step)
        study.tell(good, 0.9)
    bad = study.ask()
    bad.report(0.1, 2)
    assert not bad.should_prune()  # inside the warm-up
    bad.report(0.1, 3)
    assert bad.should_prune()


@pytest.mark.parametrize("group, name", [("sampler", n) for n in sweeper.config.SAMPLERS if n not in ("motpe", "grid")]
                         + [("pruner", n) for n in sweeper.config.PRUNERS])
def test_each_schema_lists_every_keyword_of_its_optuna_class(group, name):
    import inspect

    from hydra.utils import get_method

    cfg = node(group, name)
    accepted = set(inspect.signature(get_method(cfg._target_)).parameters)
    assert set(cfg) - {"_target_"} == accepted


def test_every_group_is_registered_under_this_sweepers_provider_with_its_schema():
    """The provider is what Hydra's --info and its errors name as the source of these configs."""
    from sweeper.config import PRUNERS, SAMPLERS, SWEEPER_NAME

    hydra = ConfigStore.instance().repo["hydra"]["sweeper"]
    nodes = {f"hydra/sweeper/{SWEEPER_NAME}": hydra[f"{SWEEPER_NAME}.yaml"]}
    nodes.update({f"hydra/sweeper/sampler/{n}": hydra["sampler"][f"{n}.yaml"] for n in SAMPLERS})
    nodes.update({f"hydra/sweeper/pruner/{n}": hydra["pruner"][f"{n}.yaml"] for n in PRUNERS})
    assert {k: n.provider for k, n in nodes.items()} == {k: "optuna_budget_sweeper" for k in nodes}
    schema = nodes[f"hydra/sweeper/{SWEEPER_NAME}"].node
    assert schema._target_ == "hydra_plugins.optuna_budget_sweeper.BudgetOptunaSweeper"


@pytest.mark.parametrize("env, url", [
    ({}, "sqlite:///outputs/sweeps.db"),
    ({"MNIST_SWEEP_STORAGE": "sqlite:///old.db"}, "sqlite:///old.db"),  # the first name, still read
    ({"SWEEP_STORAGE": "sqlite:///new.db"}, "sqlite:///new.db"),
    ({"SWEEP_STORAGE": "sqlite:///new.db", "MNIST_SWEEP_STORAGE": "sqlite:///old.db"}, "sqlite:///new.db"),
    ({"SWEEP_STORAGE": "", "MNIST_SWEEP_STORAGE": "sqlite:///old.db"}, "sqlite:///old.db"),  # empty: not set
])
def test_the_default_storage_is_read_from_the_environment_new_name_first(monkeypatch, env, url):
    from sweeper.config import storage_from_env

    for name in ("SWEEP_STORAGE", "MNIST_SWEEP_STORAGE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert storage_from_env() == url


# ------------------------------------------------------------------ how a node becomes a sampler or pruner


def user_constraints():
    """A user's own constraints function, built from ``{_target_: tests.test_sweeper_config.user_constraints}``."""
    return USERS_OWN


def USERS_OWN(trial):
    return (0.0,)


def warning_sampler(**kwargs):
    """A sampler whose constructor warns of something other than Optuna's experimental or deprecated keywords."""
    import warnings

    warnings.warn("this sampler's own warning", UserWarning)
    return optuna.samplers.RandomSampler(**kwargs)


def test_a_value_where_a_group_option_was_meant_is_one_line_naming_the_group():
    with pytest.raises(SweepError) as info:
        make_pruner("none")
    assert str(info.value) == ("hydra.sweeper.pruner='none' is a value, not a pruner config: choose one with "
                               "hydra/sweeper/pruner=none, or give hydra.sweeper.pruner._target_")


def test_a_nodes_interpolations_are_resolved_against_its_config():
    cfg = OmegaConf.create({"startup": 9, "sampler": {"_target_": "optuna.samplers.TPESampler",
                                                      "n_startup_trials": "${startup}"}})
    assert make_sampler(cfg.sampler, SPACE, offset=0)._n_startup_trials == 9


def test_a_node_without_a_target_is_one_line():
    with pytest.raises(SweepError, match=r"^hydra.sweeper.sampler._target_=None cannot be imported: "):
        make_sampler(OmegaConf.create({"seed": 1}), SPACE, offset=0)


def test_hydras_partial_key_is_not_a_keyword_of_the_sampler(caplog):
    cfg = OmegaConf.create({"_target_": "optuna.samplers.RandomSampler", "_partial_": False, "seed": 3})
    with caplog.at_level(logging.WARNING):
        assert isinstance(make_sampler(cfg, SPACE, offset=0), optuna.samplers.RandomSampler)
    assert caplog.records == []


def test_the_budgets_constraints_reach_a_sampler_that_takes_them_and_no_other():
    def excess(trial):
        return (1.0,)

    tpe = make_sampler(node("sampler", "tpe"), SPACE, offset=0, constraints_func=excess)
    assert tpe._constraints_func is excess
    assert make_sampler(node("sampler", "tpe"), SPACE, offset=0)._constraints_func is None
    random = make_sampler(node("sampler", "random"), SPACE, offset=0, constraints_func=excess)  # takes none
    assert isinstance(random, optuna.samplers.RandomSampler)
    own = node("sampler", "nsgaii")  # the user's own constraints are kept
    own.constraints_func = {"_target_": "tests.test_sweeper_config.user_constraints"}
    made = make_sampler(own, SPACE, offset=0, constraints_func=excess)
    assert made._constraints_func is USERS_OWN


def test_a_nested_target_that_cannot_be_imported_is_named_by_its_key():
    cfg = node("sampler", "nsgaii")
    cfg.crossover = {"_target_": "optuna.samplers.nsgaii.NoSuchCrossover"}
    with pytest.raises(SweepError, match=r"^hydra.sweeper.sampler.crossover._target_="
                                         r"'optuna.samplers.nsgaii.NoSuchCrossover' cannot be imported: "):
        make_sampler(cfg, SPACE, offset=0)


def test_tpe_group_is_kept_when_multivariate():
    cfg = node("sampler", "tpe")
    cfg.multivariate, cfg.group = True, True
    made = make_sampler(cfg, SPACE, offset=0)
    assert made._multivariate is True and made._group is True


def test_only_optunas_experimental_and_future_warnings_are_hushed_while_the_sampler_is_made():
    cfg = OmegaConf.create({"_target_": "tests.test_sweeper_config.warning_sampler", "seed": 1})
    with pytest.warns(UserWarning, match="this sampler's own warning"):
        make_sampler(cfg, SPACE, offset=0)
    cfg = node("sampler", "tpe")
    cfg.multivariate, cfg.group = True, True  # Optuna: group is experimental
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_sampler(cfg, SPACE, offset=0)


def test_a_sampler_its_class_refuses_is_one_line_in_its_words():
    cfg = node("sampler", "nsgaii")
    cfg.population_size = 1
    with pytest.raises(SweepError) as info:
        make_sampler(cfg, SPACE, offset=0)
    assert str(info.value) == ("hydra.sweeper.sampler (optuna.samplers.NSGAIISampler) cannot be made: "
                               "`population_size` must be greater than or equal to 2.")


def test_the_seed_moves_on_by_exactly_the_offset_and_an_unseeded_sampler_stays_unseeded():
    cfg = node("sampler", "random")
    cfg.seed = 5
    drawn = make_sampler(cfg, SPACE, offset=3)._rng.rng.randint(1 << 30)
    assert drawn == optuna.samplers.RandomSampler(seed=8)._rng.rng.randint(1 << 30)
    cfg.seed = None
    assert isinstance(make_sampler(cfg, SPACE, offset=3), optuna.samplers.RandomSampler)
    assert cfg.seed is None  # the caller's node is left as it was


def test_a_grid_over_a_continuous_range_is_one_line():
    with pytest.raises(SweepError) as info:
        make_sampler(node("sampler", "grid"), {"lr": FloatDistribution(0.01, 0.3)}, offset=0)
    assert str(info.value) == ("lr: the grid sampler needs choice(...) or range(...), not "
                               "FloatDistribution(high=0.3, log=False, low=0.01, step=None)")


MISSING_PACKAGES = [  # (sampler, the packages not installed, what the error says after "hydra.sweeper.sampler ")
    ("cmaes", ["cmaes"], "(optuna.samplers.CmaEsSampler) needs cmaes, and cmaes is not installed: "
                         "pip install 'mnist-arch-sweep[samplers]'"),
    ("qmc", ["scipy"], "(optuna.samplers.QMCSampler) needs scipy, and scipy is not installed: "
                       "pip install 'mnist-arch-sweep[samplers]'"),
    ("gp", ["torch"], "(optuna.samplers.GPSampler) needs scipy and torch, and torch is not installed: "
                      "pip install 'mnist-arch-sweep[samplers]' torch"),
    ("gp", ["scipy"], "(optuna.samplers.GPSampler) needs scipy and torch, and scipy is not installed: "
                      "pip install 'mnist-arch-sweep[samplers]'"),
    ("gp", ["scipy", "torch"], "(optuna.samplers.GPSampler) needs scipy and torch, and scipy and torch are not "
                               "installed: pip install 'mnist-arch-sweep[samplers]' torch"),
]


@pytest.mark.parametrize("sampler, blocked, said", MISSING_PACKAGES)
def test_a_samplers_missing_package_is_named_with_what_to_install(monkeypatch, sampler, blocked, said):
    """In process; tests/test_boundaries.py has the same through a sweep, before any trial."""
    import sys

    from sweeper.samplers import check_sampler_needs

    cfg = node("sampler", sampler)
    check_sampler_needs(cfg)  # all installed here
    for module in blocked:
        monkeypatch.setitem(sys.modules, module, None)  # what Python's import does when it is not installed
    with pytest.raises(SweepError) as info:
        check_sampler_needs(cfg)
    assert str(info.value) == f"hydra.sweeper.sampler {said}"


def test_a_sampler_that_needs_nothing_more_or_no_config_passes_the_check(monkeypatch):
    import sys

    from sweeper.samplers import check_sampler_needs

    for module in ("scipy", "torch", "cmaes"):
        monkeypatch.setitem(sys.modules, module, None)
    for name in ("tpe", "random", "nsgaii", "grid"):
        check_sampler_needs(node("sampler", name))
    check_sampler_needs("none")  # a value: _build says what is wrong with it
    check_sampler_needs(OmegaConf.create({"seed": 1}))  # no target: likewise


def test_a_grid_that_stops_its_study_on_the_last_tell_is_no_error_and_other_errors_are():
    from optuna.trial import TrialState

    from sweeper.samplers import tell

    space = {"x": CategoricalDistribution([1])}
    study = optuna.create_study(sampler=make_sampler(node("sampler", "grid"), space, offset=0))
    plain = optuna.create_study(sampler=optuna.samplers.GridSampler({"x": [1]}))
    with pytest.raises(RuntimeError, match="Study.stop"):  # what Optuna's own tell does at the grid's last point
        plain.tell(plain.ask(space), 1.0)
    trial = study.ask(space)
    tell(study, trial, TrialState.COMPLETE, [2.0])
    (told,) = study.get_trials()
    assert told.state == TrialState.COMPLETE and told.values == [2.0]
    tell(study, trial.number, TrialState.PRUNED)  # told already: skipped, as a sweep's second tell is
    assert study.get_trials()[0].state == TrialState.COMPLETE
    other = optuna.create_study()
    tell(other, other.ask(), TrialState.PRUNED)  # the state given: Optuna infers none from no values
    tell(other, other.ask(), TrialState.FAIL)
    assert [t.state for t in other.get_trials()] == [TrialState.PRUNED, TrialState.FAIL]

    class Gone(optuna.Study):
        def tell(self, *args, **kwargs):
            raise RuntimeError("the database is gone")

    with pytest.raises(RuntimeError, match="^the database is gone$"):
        tell(Gone(study_name=study.study_name, storage=study._storage), 0, TrialState.COMPLETE, [1.0])
