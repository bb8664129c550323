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


def test_a_shuffled_sweep_keeps_the_order_written_so_every_invocation_opens_the_same_space():
    for _ in range(5):  # Hydra's shuffle would order them anew each time (and a resumed study would differ)
        space = search_space_from_overrides(["x=shuffle(range(1,9))", "y=shuffle(choice(c,a,b,d,e))",
                                             "z=shuffle(range(0,1,0.25))"])[0]
        assert space == {"x": CategoricalDistribution(list(range(1, 9))), "y": CategoricalDistribution(list("cabde")),
                         "z": CategoricalDistribution([0.0, 0.25, 0.5, 0.75])}


def test_a_list_or_dict_choice_is_passed_as_its_text():
    (dist,) = search_space_from_overrides(["x=choice([1,2],{a:1},3,true,abc)"])[0].values()
    assert dist.choices == ("[1,2]", "{a:1}", 3, True, "abc")


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


@pytest.mark.parametrize("override, low, high, step, grid", [
    # as many values as Hydra's own range gives; the last kept where float steps do not land on it exactly
    ("x=range(0,1,0.3)", 0.0, 0.9, 0.3, [0.0, 0.3, 0.6, 0.9]),
    ("x=range(0,0.7,0.1)", 0.0, 0.6, 0.1, [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]),
    ("x=range(1,0.5,-0.25)", 0.75, 1.0, 0.25, [0.75, 1.0]),
    ("x=range(0.5,5.5,1)", 0.5, 4.5, 1.0, [0.5, 1.5, 2.5, 3.5, 4.5]),
    ("x=range(0.25,0.5,0.5)", 0.25, 0.25, 0.5, [0.25]),
])
def test_a_float_range_has_exactly_hydras_values(override, low, high, step, grid):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    distributions, _ = search_space_from_overrides([override])
    (dist,) = distributions.values()
    assert (dist.low, dist.high, dist.step) == (low, high, step)  # exact: Optuna would cut a high off the steps
    assert grid_choices(distributions)["x"] == pytest.approx(grid)
    hydras = list(OverridesParser.create().parse_overrides([override])[0].sweep_iterator())
    assert sorted(hydras) == pytest.approx(grid)


@pytest.mark.parametrize("override, message", [
    ("x=range(5,1)", "x=range(5,1): the range is empty (Hydra's range excludes its end)"),
    ("x=range(3,3)", "x=range(3,3): the range is empty (Hydra's range excludes its end)"),
    ("x=range(1,5,0)", "x=range(1,5,0): the range is empty (Hydra's range excludes its end)"),
    ("x=range(2.0,1)", "x=range(2.0,1): the range is empty (Hydra's range excludes its end)"),
    ("x=range(1,5,-1)", "x=range(1,5,-1): the range is empty (Hydra's range excludes its end)"),
    ("x=interval(1,1)", "x=interval(1,1): interval needs low < high"),
    ("x=tag(log,interval(0,1))", "x=tag(log,interval(0,1)): a log interval needs low > 0"),
    ("x=tag(log,int(interval(-1,5)))", "x=tag(log,int(interval(-1,5))): a log interval needs low > 0"),
    ("x=shuffle(range(5,1))", "x=shuffle(range(5,1)): an empty choice"),
    ("x=glob(*)", "x=glob(*): glob(...) is not supported by the Optuna sweeper; list the options with choice(...)"),
])
def test_each_bad_search_space_entry_is_one_line_naming_it(override, message):
    with pytest.raises(SearchSpaceError) as info:
        search_space_from_overrides([override])
    assert str(info.value) == message


def test_interval_edges_and_tags():
    space = search_space_from_overrides(["a=tag(log,interval(0.5,1))", "b=int(interval(0,1))", "c=interval(-1,0)",
                                         "d=tag(log,int(interval(1,2)))"])[0]
    assert space == {"a": FloatDistribution(0.5, 1.0, log=True), "b": IntDistribution(0, 1),
                     "c": FloatDistribution(-1.0, 0.0), "d": IntDistribution(1, 2, log=True)}
    assert type(space["c"].low) is float and type(space["b"].low) is int


@pytest.mark.parametrize("node, message", [
    ({"type": "int", "low": 0}, "search_space.key: 'high'"),
    ({"type": "categorical"}, "search_space.key: 'choices'"),
    ({"type": "float", "low": "a", "high": 1}, "search_space.key: could not convert string to float: 'a'"),
    ({"type": "categorical", "choices": 5}, "search_space.key: 'int' object is not iterable"),
    ({"low": 0, "high": 1}, "search_space.key: type 'None' is not one of: int, float, categorical"),
])
def test_a_deprecated_entry_that_cannot_be_read_is_one_line(node, message):
    with pytest.raises(SearchSpaceError) as info:
        distribution_from_config("key", node)
    assert str(info.value) == message and (info.value.__context__ is None or info.value.__suppress_context__)


def test_deprecated_entries_default_to_no_step_and_a_linear_scale():
    assert distribution_from_config("k", {"type": "int", "low": 1, "high": 5, "step": None}) == IntDistribution(1, 5)
    made = distribution_from_config("k", {"type": "float", "low": 0, "high": 1})
    assert made == FloatDistribution(0.0, 1.0) and made.step is None and not made.log
    assert distribution_from_config("k", {"type": "float", "low": 1, "high": 4, "step": 1.5, "log": False}) == \
        FloatDistribution(1.0, 4.0, step=1.5)


def test_every_kind_of_distribution_is_described():
    assert describe(IntDistribution(1, 9)) == "int[1,9]"  # step 1: not shown
    assert describe(IntDistribution(1, 100, log=True)) == "int[1,100] log"
    assert describe(FloatDistribution(0.5, 2.0)) == "float[0.5,2]"
    assert describe(FloatDistribution(0.0, 1.0, step=0.25)) == "float[0,1] step 0.25"
    assert describe(FloatDistribution(1e-5, 1e5, log=True)) == "float[1e-05,100000] log"
    assert describe(CategoricalDistribution([None, True, 1.5])) == "choice(None,True,1.5)"


def test_params_then_the_command_line_then_deprecated_entries_make_the_space(recwarn):
    from omegaconf import OmegaConf

    from sweeper.search_space import sweep_space

    assert sweep_space({"a": "choice(1,2)", "b": "3"}, None, ["a=range(1,3)", "c=interval(0,1)"]) == (
        {"a": IntDistribution(1, 2), "c": FloatDistribution(0.0, 1.0)}, {"b": "3"})
    assert len(recwarn) == 0
    deprecated = OmegaConf.create({"a": {"type": "int", "low": 0, "high": 3},
                                   "z": {"type": "float", "low": 0, "high": 1}})
    with pytest.warns(UserWarning, match=r"^hydra.sweeper.search_space is deprecated \(as in hydra-optuna-sweeper\): "
                                          r"use hydra.sweeper.params with the override grammar$"):
        assert sweep_space({"a": "choice(1,2)"}, deprecated, []) == (
            {"a": CategoricalDistribution([1, 2]), "z": FloatDistribution(0.0, 1.0)}, {})  # given otherwise: kept
    with pytest.warns(UserWarning):
        assert sweep_space(None, {"z": {"type": "categorical", "choices": ["p"]}}, []) == (
            {"z": CategoricalDistribution(["p"])}, {})
    # a key fixed in params and searched on the command line (or the other way round) is the later one only
    assert sweep_space({"b": "3"}, None, ["b=choice(1,2)"]) == ({"b": CategoricalDistribution([1, 2])}, {})
    assert sweep_space({"b": "choice(1,2)"}, None, ["b=3"]) == ({}, {"b": "3"})


def test_a_deprecated_entry_is_resolved_said_once_in_the_log_and_named_in_its_error(caplog):
    from omegaconf import OmegaConf

    import sweeper.search_space as search_space_module
    from sweeper.search_space import sweep_space

    root = OmegaConf.create({"lo": 2, "space": {"a": {"type": "int", "low": "${lo}", "high": 5}}})
    with pytest.warns(UserWarning) as warned, caplog.at_level("WARNING", logger="sweeper.search_space"):
        assert sweep_space(None, root.space, []) == ({"a": IntDistribution(2, 5)}, {})  # ${lo} resolved
    # said of the caller (the sweeper), not of this module (under mutmut, of its trampoline: one frame more)
    assert len(warned) == 1 and warned[0].filename != search_space_module.__file__
    assert [r.getMessage() for r in caplog.records] == [
        "hydra.sweeper.search_space is deprecated: use hydra.sweeper.params"]
    with pytest.warns(UserWarning), pytest.raises(SearchSpaceError, match=r"^search_space.z: "):
        sweep_space(None, {"z": {"type": "int", "low": 0}}, [])  # no high


def test_a_space_counts_its_points_only_when_every_distribution_is_discrete():
    from sweeper.search_space import space_size

    assert space_size({"a": CategoricalDistribution([1, 2]), "b": IntDistribution(0, 10, step=5),
                       "c": FloatDistribution(0, 1, step=0.25)}) == 2 * 3 * 5
    assert space_size({}) == 1
    assert space_size({"a": CategoricalDistribution([1]), "b": FloatDistribution(0, 1)}) is None
    assert space_size({"a": IntDistribution(1, 8, log=True)}) is None  # a log scale has no grid


def test_a_value_is_written_back_as_hydra_reads_it():
    from sweeper.search_space import format_override

    assert [format_override("k", v) for v in (None, True, False, 0, 1, 0.5, "a")] == [
        "k=null", "k=true", "k=false", "k=0", "k=1", "k=0.5", "k=a"]


def test_a_key_the_apps_config_lacks_is_refused_with_the_nearest_one_and_the_keys_left_alone_pass():
    from omegaconf import OmegaConf

    from sweeper.search_space import check_keys_exist, nearest_key

    cfg = OmegaConf.create({"model": {"width": 8, "head": {"kind": "gap"}}, "layers": [1, 2], "lr": 0.1,
                            "hydra": {"job": {"name": "x"}}, "optim": {"name": "adam"}})
    options = {"optim": ["adam", "sgd"], "model/norm": ["bn"], "db": ["mysql"], "Xnet": ["a"]}.get
    for keys in (["model.width", "model.head.kind", "layers.1", "lr", "model"], ["+new.key"], ["~lr"], ["++x"],
                 ["db@backup"], ["model/norm"], ["hydra.sweeper.x"], ["optim", "optim.lr"], ["++optim", "optim.b.c"],
                 ["+db@backup", "db.host"], ["Xnet", "Xnet.depth"]):  # a packaged group; a group named X...
        check_keys_exist(keys, cfg, lambda g: options(g) or [])  # a chosen group's keys may be another option's

    def refused(key):
        with pytest.raises(SearchSpaceError) as info:
            check_keys_exist(["lr", key], cfg, lambda g: options(g) or [])
        return str(info.value)

    assert refused("model.widht") == ("model.widht is not a key of the app's config; did you mean model.width? "
                                      "(to add a new key: +model.widht=...)")
    assert refused("layers.2") == ("layers.2 is not a key of the app's config; did you mean layers? "
                                   "(to add a new key: +layers.2=...)")
    assert refused("qqqqq") == "qqqqq is not a key of the app's config; (to add a new key: +qqqqq=...)"
    assert refused("lr.x").startswith("lr.x is not a key") and refused("layers.x").startswith("layers.x is not a key")
    assert refused("hydrax.job") .startswith("hydrax.job is not a key")  # only hydra. itself is Hydra's
    # a group chosen by its path: its keys in dots are left alone; any group path is Hydra's to judge
    for keys in (["model/norm", "model.norm.eps"], ["other/group"]):
        check_keys_exist(keys, cfg, lambda g: options(g) or [])
    # a key left alone (for any reason) does not end the check of the keys after it
    for first in (["+new.key"], ["lr"], ["optim", "optim.lr"], ["model/norm", "model.norm.eps"], ["other/group"]):
        with pytest.raises(SearchSpaceError, match=r"^qqqqq is not a key"):
            check_keys_exist(first + ["qqqqq"], cfg, lambda g: options(g) or [])
    assert nearest_key("model.head.knd", cfg) == "model.head.kind" and nearest_key("lrr", cfg) == "lr"
    assert nearest_key("hydra.job.nam", cfg) is None  # Hydra's own keys are never offered
    assert nearest_key("zzz", cfg) is None


def test_a_deprecated_entry_typed_with_hydra_optuna_sweepers_enum_is_read_by_its_name():
    from enum import Enum

    DistributionType = Enum("DistributionType", "int float categorical")  # hydra-optuna-sweeper's config type
    assert distribution_from_config("k", {"type": DistributionType.int, "low": 1, "high": 4}) == IntDistribution(1, 4)
    assert distribution_from_config("k", {"type": DistributionType.categorical, "choices": ["a"]}) == \
        CategoricalDistribution(["a"])
    with pytest.raises(SearchSpaceError, match=r"^search_space.k: type 'DistributionType.int' is not one of"):
        distribution_from_config("k", {"type": "DistributionType.int", "low": 1, "high": 4})


def test_hydras_own_group_is_never_offered_as_the_nearest_key():
    from omegaconf import OmegaConf

    from sweeper.search_space import nearest_key

    cfg = OmegaConf.create({"hydra": {"job": {"name": "x"}}, "lr": 0.1})
    assert nearest_key("hydr", cfg) is None and nearest_key("hydra.jb", cfg) is None and nearest_key("z", cfg) is None
    assert nearest_key("lrr", cfg) == "lr"


def test_every_group_choice_is_checked_whatever_comes_before_it():
    from sweeper.search_space import check_group_choices

    options = {"db": ["mysql"], "Xnet": ["a", "b"]}.get
    bad = {"db": CategoricalDistribution(["mysql", "sqlite"])}
    for first in ({"lr": FloatDistribution(0.1, 1.0)}, {"x": CategoricalDistribution(["anything"])}):
        with pytest.raises(SearchSpaceError, match=r"^db=choice\(mysql,sqlite\): 'sqlite' is not an option of config "
                                                   r"group 'db'; its options: mysql$"):
            check_group_choices({**first, **bad}, lambda g: options(g) or [])
    with pytest.raises(SearchSpaceError, match=r"'c' is not an option of config group 'Xnet'; its options: a, b$"):
        check_group_choices({"Xnet": CategoricalDistribution(["a", "c"])}, lambda g: options(g) or [])
