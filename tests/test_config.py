import math

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from mnist_arch.model import build_model, count_parameters
from mnist_arch.optim import build_optimizer, build_schedule

from .support import CONF, REPO, compose, group_options

GROUPS = ("data", "data/augment", "model", "model/widths", "model/norm", "model/dropout", "model/pool", "model/head",
          "optim", "schedule", "trainer")
GROUP_OVERRIDES = [
    f"{group}={option}" for group in GROUPS for option in group_options(group)
] + [f"+experiment={name}" for name in group_options("experiment")]


@pytest.mark.parametrize("override", GROUP_OVERRIDES)
def test_every_config_in_conf_composes_and_resolves(override):
    cfg = compose(override)
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # no MISSING left anywhere
    group, option = override.lstrip("+").split("=")
    if group in ("optim", "schedule"):
        assert cfg[group].name == option  # the option chosen is the one composed
    model = build_model(cfg.model)
    opt = build_optimizer(model.parameters(), cfg.optim)
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == count_parameters(model) > 0
    schedule = build_schedule(opt, cfg.schedule, epochs=2, steps_per_epoch=3)
    for _ in range(6):  # the whole schedule: learning rates stay finite, never negative (cosine ends at 0)
        opt.step()
        schedule.step()
        assert all(math.isfinite(g["lr"]) and g["lr"] >= 0 for g in opt.param_groups)


def test_defaults_are_the_documented_ones():
    cfg = compose()
    assert cfg.trainer.epochs == 20
    assert cfg.budget.max_params == 20000
    assert cfg.objective.metric == "best_test_acc"
    assert cfg.objective.target_acc == 99.4
    assert cfg.data.val_size == 0
    assert cfg.trainer.device == "auto"


def test_misspelled_key_fails_at_compose_time():
    with pytest.raises(ConfigCompositionException) as info:
        compose("trainer.epoch=5")
    assert "trainer.epoch" in str(info.value)


def test_misspelled_key_in_a_config_file_fails(tmp_path):
    # the schema is struct: a key the dataclass lacks cannot be added by merging
    cfg = compose()
    with pytest.raises(ConfigKeyError):
        OmegaConf.merge(cfg, {"model": {"widht": 3}})


def test_wrong_type_fails_at_compose_time():
    with pytest.raises(ConfigCompositionException) as info:
        compose("trainer.epochs=many")
    assert isinstance(info.value.__cause__, ValidationError)
    assert "many" in str(info.value.__cause__)


def test_unknown_group_option_lists_the_valid_ones():
    with pytest.raises(ConfigCompositionException) as info:
        compose("model/norm=batchnorm")
    assert "bn_relu" in str(info.value) and "relu_bn" in str(info.value)


@pytest.mark.parametrize("preset", group_options("search"))
def test_every_search_preset_names_real_keys_and_options(preset):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from optuna.distributions import CategoricalDistribution

    import hydra_plugins.optuna_budget_sweeper  # noqa: F401  the sweeper's configs
    from mnist_arch.config import CONF_DIR
    from sweeper.search_space import search_space_from_overrides

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = hydra_compose("train", overrides=[f"+search={preset}"], return_hydra_config=True)
    assert cfg.hydra.sweeper._target_ == "hydra_plugins.optuna_budget_sweeper.BudgetOptunaSweeper"
    distributions, fixed = search_space_from_overrides([f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()])
    assert distributions and not fixed
    for key, dist in distributions.items():
        if (CONF / key).is_dir():  # a config group: every choice must be an option
            assert set(dist.choices) <= set(group_options(key)), key
            for choice in dist.choices:  # and compose with the preset
                compose(f"+search={preset}", f"{key}={choice}")
        else:
            assert OmegaConf.select(cfg, key, default="<absent>") != "<absent>", key  # a real key (null is a value)
            if isinstance(dist, CategoricalDistribution):
                compose(f"+search={preset}", f"{key}={dist.choices[0]}")


@pytest.mark.parametrize("name, n_params", [
    ("frontier_best", 16959), ("frontier_small", 4856), ("frontier_holds", 4938), ("frontier_holds_6k", 5841),
    ("s4_8k", 7988), ("seeds_small", 4938), ("seeds_small_val", 3955), ("seeds_20k", 16636),
    ("frontier_best_end", 16959), ("small_end_t7", 4938), ("small_end_t21", 4938), ("small_end_t20", 3689),
    ("small_end_t21_sep", 4950)])
def test_shipped_experiments_have_the_parameter_counts_readme_reports(name, n_params):
    assert count_parameters(build_model(compose(f"+experiment={name}").model)) == n_params


@pytest.mark.parametrize("name, seed", [("frontier_best", 11), ("frontier_small", 11), ("frontier_holds", 11),
                                        ("frontier_holds_6k", 11), ("s4_8k", 1), ("seeds_small", 11),
                                        ("seeds_20k", 13), ("frontier_best_end", 12), ("small_end_t7", 13), ("small_end_t21", 11), ("small_end_t20", 12),
                                        ("small_end_t21_sep", 24)])
def test_shipped_experiments_compose_to_the_configs_their_measured_runs_used(name, seed):
    """docs/results/<name>/ holds the composed config of each measured run (README's tables)."""
    ran = OmegaConf.to_container(OmegaConf.load(REPO / "docs" / "results" / name / f"seed{seed}.config.yaml"))
    again = OmegaConf.to_container(compose(
        f"+experiment={name}", f"seed={seed}", "trainer.epochs=20", f"data.val_size={ran['data']['val_size']}",
        f"trainer.threads={ran['trainer']['threads']}", f"trainer.progress={str(ran['trainer']['progress']).lower()}",
    ), resolve=True)
    again.pop("hydra", None)
    assert set(again["trainer"].pop("callbacks")) == {"sweep_trial"}  # the reporter, idle outside a sweep
    ran["trainer"].pop("callbacks")
    ran["trainer"].setdefault("channels_last", False)  # s4_8k ran before the key existed; false is the old path
    # keys added after these runs; each default is the path they ran (no average, element dropout, no photometric jitter, no shear)
    ran["trainer"].setdefault("ema", None)
    for key, off in {"ema_warmup": False, "bn_recompute": 0, "label_smoothing": 0.0}.items():
        ran["trainer"].setdefault(key, off)  # the end-of-training options, off: the path every measured run took
    ran["schedule"].setdefault("anneal_epochs", 0)
    ran["model"]["dropout"].setdefault("kind", "element")
    ran["model"].setdefault("conv", {"kind": "full"})  # every measured run's convs were full ones
    ran["data"]["augment"].update({k: ran["data"]["augment"].get(k, 0.0) for k in ("brightness", "contrast", "shear")})
    tracking = again.pop("tracking")
    assert tracking == ran.pop("tracking", tracking) and tracking["kind"] == "none"  # older runs predate the key
    if name.startswith("frontier_holds"):  # its sweep optimised min_last_k (and size); the old dump said best
        assert again["objective"].pop("metric") == "min_last_k_test_acc"
        ran["objective"].pop("metric")
    assert again == ran


def test_the_end_of_training_design_trains_the_seeds_small_net_and_its_rows_are_the_fraction():
    """conf/search/end_of_training.yaml writes the seeds_small net out (its experiment brings a search
    space): the same net, optimizer, budget and objective. Its rows are benchmarks/end_of_training.py's
    design: every factor balanced (4 high, 4 low) and orthogonal to every other in each half."""
    import sys

    sys.path.insert(0, str(REPO / "benchmarks"))
    import end_of_training as eot

    design_cfg = compose("+search=end_of_training")
    pick = compose("+experiment=seeds_small")
    for key in ("model.widths", "model.norm", "model.pool", "model.head", "model.dropout.rate", "model.dropout.placement",
                "optim", "schedule.name", "budget", "objective", "data.val_size", "trainer.epochs", "trainer.channels_last"):
        assert OmegaConf.select(design_cfg, key) == OmegaConf.select(pick, key), key
    assert count_parameters(build_model(design_cfg.model)) == 4938
    rows = eot.all_rows()
    assert len(rows) == 16
    for half in (list(rows.values())[:8], list(rows.values())[8:]):
        for a in eot.FACTORS:
            assert sum(r[a] for r in half) == 0
            for b in eot.FACTORS:
                if a < b:
                    assert sum(r[a] * r[b] for r in half) == 0, (a, b)
    for i, (name, row) in enumerate(rows.items(), 1):
        assert (CONF / "design" / f"{name}.yaml").read_text() == eot.row_yaml(i, row)  # the files are the design
        cfg = compose("+search=end_of_training", f"design={name}")
        for factor, level in row.items():
            for key, value in eot.FACTORS[factor][1 if level < 0 else 2].items():
                if key == "data/augment":
                    assert cfg.data.augment.rotation == {"mild": 7.0, "strong": 12.0}[value]
                else:
                    assert OmegaConf.select(cfg, key) == value, (name, key)


def test_the_design_analysis_recovers_a_known_main_effect_with_its_seed_spread():
    import sys

    sys.path.insert(0, str(REPO / "benchmarks"))
    import end_of_training as eot

    rows = dict(list(eot.all_rows().items())[:8])
    seed_shift = {21: 0.0, 22: 0.05, 23: -0.05}
    runs = [(name, seed, {"min_last_3": 99.3 + 0.1 * (row["E"] > 0) + seed_shift[seed]})
            for name, row in rows.items() for seed in eot.SEEDS]
    by_factor = {e["factor"]: e for e in eot.effects(runs)}
    assert by_factor["E"]["effect"] == pytest.approx(0.1)
    assert by_factor["E"]["per_seed"] == pytest.approx({21: 0.1, 22: 0.1, 23: 0.1})
    assert by_factor["E"]["n_high"] == by_factor["E"]["n_low"] == 12
    assert all(abs(e["effect"]) < 1e-9 for f, e in by_factor.items() if f != "E")  # orthogonal: nothing leaks
    assert by_factor["E"]["aliases"] == "AC BG DF"


def readme_train_commands():
    """The ``mnist-train`` lines of README's "Train one model" block, their overrides split as bash would."""
    import shlex

    block = (REPO / "README.md").read_text().split("## Train one model", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line, comments=True)[1:] for line in block.splitlines() if line.startswith("mnist-train")]


@pytest.mark.parametrize("overrides", readme_train_commands(), ids=lambda o: " ".join(o) or "(defaults)")
def test_every_train_command_in_the_readme_composes_to_a_model_it_can_build(overrides):
    cfg = compose(*overrides)
    n = count_parameters(build_model(cfg.model))
    limit = cfg.budget.max_params
    assert limit is None or n <= limit  # each one trains: none stops at the budget guard
