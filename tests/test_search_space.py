import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from sweeper.search_space import (
    SearchSpaceError, describe, distribution_from_config, grid_choices, search_space_from_overrides,
)


@pytest.mark.parametrize(
    "override, expected",
    [
        ("x=choice(1,2,3)", CategoricalDistribution([1, 2, 3])),
        ("model/norm=choice(bn_relu,relu_bn,none)", CategoricalDistribution(["bn_relu", "relu_bn", "none"])),
        ("x=choice(0.5,true,abc)", CategoricalDistribution([0.5, True, "abc"])),
        ("x=range(1,5)", IntDistribution(1, 4, step=1)),  # Hydra's range: end excluded
        ("x=range(0,10,3)", IntDistribution(0, 9, step=3)),
        ("x=range(64,257,64)", IntDistribution(64, 256, step=64)),
        ("x=range(10,0,-2)", IntDistribution(2, 10, step=2)),
        ("x=range(0.1,0.5,0.1)", FloatDistribution(0.1, 0.4, step=0.1)),
        ("x=interval(0.1,0.5)", FloatDistribution(0.1, 0.5)),
        ("x=interval(1,8)", FloatDistribution(1.0, 8.0)),  # Hydra's interval is always real; ints: range
        ("x=tag(log,interval(0.001,0.1))", FloatDistribution(0.001, 0.1, log=True)),
        ("x=tag(log,interval(1,64))", FloatDistribution(1.0, 64.0, log=True)),
        # hydra-optuna-sweeper 1.3's test table, override by override (range ends: Hydra's, see README)
        ("key=choice(1,2)", CategoricalDistribution([1, 2])),
        ("key=choice(true, false)", CategoricalDistribution([True, False])),
        ("key=choice('hello', 'world')", CategoricalDistribution(["hello", "world"])),
        ("key=range(1,3)", IntDistribution(1, 2)),  # upstream: IntDistribution(1, 3)
        ("key=interval(1, 5)", FloatDistribution(1.0, 5.0)),
        ("key=int(interval(1, 5))", IntDistribution(1, 5)),
        ("key=tag(log, interval(1, 5))", FloatDistribution(1.0, 5.0, log=True)),
        ("key=tag(log, int(interval(1, 5)))", IntDistribution(1, 5, log=True)),
        ("key=int(interval(-5,5))", IntDistribution(-5, 5)),
        ("key=tag(log, int(interval(1,100)))", IntDistribution(1, 100, log=True)),
        ("key=range(0.5, 5.5, step=1)", FloatDistribution(0.5, 4.5, step=1.0)),  # upstream: (0.5, 5.5, step=1)
    ],
)
def test_override_becomes_the_expected_distribution(override, expected):
    distributions, fixed = search_space_from_overrides([override])
    (name, dist), = distributions.items()
    assert fixed == {}
    assert name == override.split("=", 1)[0]
    if isinstance(expected, FloatDistribution) and expected.step is not None:
        assert dist.low == pytest.approx(expected.low) and dist.high == pytest.approx(expected.high)
        assert dist.step == pytest.approx(expected.step) and not dist.log
    else:
        assert dist == expected


@pytest.mark.parametrize("override", ["key=int(interval(-5,5))", "key=tag(log, int(interval(1,100)))"])
def test_int_intervals_propose_integers(override):
    import optuna

    (dist,) = search_space_from_overrides([override])[0].values()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    values = [study.ask({"key": dist}).params["key"] for _ in range(20)]
    assert all(type(v) is int for v in values) and len(set(values)) > 3


@pytest.mark.parametrize(
    "node, expected",
    [  # hydra-optuna-sweeper's deprecated search_space form, its own test table
        ({"type": "categorical", "choices": [1, 2, 3]}, CategoricalDistribution([1, 2, 3])),
        ({"type": "int", "low": 0, "high": 10}, IntDistribution(0, 10)),
        ({"type": "int", "low": 0, "high": 10, "step": 2}, IntDistribution(0, 10, step=2)),
        ({"type": "int", "low": 1, "high": 100, "log": True}, IntDistribution(1, 100, log=True)),
        ({"type": "float", "low": 0, "high": 1}, FloatDistribution(0.0, 1.0)),
        ({"type": "float", "low": 0, "high": 10, "step": 2}, FloatDistribution(0.0, 10.0, step=2.0)),
        ({"type": "float", "low": 1, "high": 100, "log": True}, FloatDistribution(1.0, 100.0, log=True)),
    ],
)
def test_deprecated_search_space_entries(node, expected):
    assert distribution_from_config("key", node) == expected


def test_deprecated_search_space_entry_of_unknown_type_is_refused():
    with pytest.raises(SearchSpaceError, match="search_space.key: type 'normal' is not one of: int, float, categorical"):
        distribution_from_config("key", {"type": "normal", "low": 0, "high": 1})


def test_distributions_are_described_in_a_few_characters():
    assert describe(CategoricalDistribution(["a", "b"])) == "choice(a,b)"
    assert describe(IntDistribution(64, 256, step=64)) == "int[64,256] step 64"
    assert describe(FloatDistribution(0.001, 0.1, log=True)) == "float[0.001,0.1] log"


def test_shuffled_range_is_a_choice_of_its_values():
    (dist,) = search_space_from_overrides(["x=shuffle(range(1,4))"])[0].values()
    assert isinstance(dist, CategoricalDistribution) and sorted(dist.choices) == [1, 2, 3]


def test_plain_values_are_fixed_and_later_entries_win():
    distributions, fixed = search_space_from_overrides(
        ["trainer.epochs=3", "optim.lr=interval(0.1,0.2)", "+search=smoke", "optim.lr=0.05"]
    )
    assert distributions == {}
    assert fixed == {"trainer.epochs": "3", "+search": "smoke", "optim.lr": "0.05"}


@pytest.mark.parametrize(
    "override, message",
    [
        ("x=range(5,1)", "the range is empty"),
        ("x=tag(log,interval(0,1))", "a log interval needs low > 0"),
        ("x=interval(2,1)", "interval needs low < high"),
    ],
)
def test_bad_search_space_entries_are_refused(override, message):
    with pytest.raises(SearchSpaceError, match=message):
        search_space_from_overrides([override])


def test_grid_choices_enumerate_discrete_distributions():
    distributions, _ = search_space_from_overrides(["a=choice(x,y)", "b=range(1,4)", "c=range(0.0,0.3,0.1)"])
    grid = grid_choices(distributions)
    assert grid["a"] == ["x", "y"] and grid["b"] == [1, 2, 3]
    assert grid["c"] == pytest.approx([0.0, 0.1, 0.2])
    with pytest.raises(SearchSpaceError, match="grid sampler needs"):
        grid_choices(search_space_from_overrides(["d=interval(0.0,1.0)"])[0])
