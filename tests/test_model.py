import re

import pytest
import torch
from torch import nn

from mnist_arch.errors import ConfigError
from mnist_arch.model import build_model, count_parameters

from .support import CONF, compose, group_options


def conv(c_in, c_out, k, bias):
    return c_in * c_out * k * k + (c_out if bias else 0)


def bn(c):
    return 2 * c


def test_s4_parameter_count_by_hand():
    # block1: 1->10->10->20 (3x3, no bias: BN follows), pool, 1x1 20->10, block2: 10->10->16->16, head 16->10 with bias
    expected = (
        conv(1, 10, 3, False) + bn(10) + conv(10, 10, 3, False) + bn(10) + conv(10, 20, 3, False) + bn(20)
        + conv(20, 10, 1, False) + bn(10)
        + conv(10, 10, 3, False) + bn(10) + conv(10, 16, 3, False) + bn(16) + conv(16, 16, 3, False) + bn(16)
        + conv(16, 10, 1, True)
    )
    assert expected == 7988
    assert count_parameters(compose("model=s4").model) == expected


def test_plain_parameter_count_by_hand():
    # no BatchNorm: every conv keeps its bias
    expected = (
        conv(1, 10, 3, True) + conv(10, 10, 3, True) + conv(10, 20, 3, True) + conv(20, 10, 1, True)
        + conv(10, 10, 3, True) + conv(10, 16, 3, True) + conv(16, 16, 3, True) + conv(16, 10, 1, True)
    )
    assert expected == 7896
    assert count_parameters(compose("model=plain").model) == expected


def test_relu_bn_keeps_conv_bias_and_counts_it():
    bn_relu = count_parameters(compose("model=s4").model)
    relu_bn = count_parameters(compose("model=s4", "model/norm=relu_bn").model)
    # seven convs keep their bias: 10+10+20 (block1) + 10 (transition) + 10+16+16 (block2)
    assert relu_bn - bn_relu == 10 + 10 + 20 + 10 + 10 + 16 + 16
    model = build_model(compose("model=s4").model)
    assert model.block1.conv1.conv.bias is None
    model = build_model(compose("model=s4", "model/norm=relu_bn").model)
    assert model.block1.conv1.conv.bias is not None


@pytest.mark.parametrize("head", ["gap_conv", "gap_linear", "conv_gap"])
def test_every_head_is_a_one_by_one_map_of_channels_to_classes(head):
    """channels * classes + classes parameters whichever head (16 * 10 + 10 in s4); conv_gap's map is spatial."""
    model = build_model(compose("model=s4", f"model/head={head}").model)
    assert sum(p.numel() for p in model.head.parameters()) == 16 * 10 + 10
    assert count_parameters(model) == 7988
    if head == "conv_gap":
        assert model.head.conv.kernel_size == (1, 1) and list(model.head._modules) == ["conv", "gap", "flatten"]


def test_input_shape_is_a_batch_of_the_configs_images():
    from mnist_arch.model import input_shape

    cfg = compose("model=s4", "model.image_size=32", "model.in_channels=3").model
    assert input_shape(cfg) == (1, 3, 32, 32) and input_shape(cfg, batch=5) == (5, 3, 32, 32)


def test_width_multiplier_scales_and_rounds_widths():
    model = build_model(compose("model=s4", "model.widths.multiplier=1.5").model)
    assert model.block1.conv3.conv.out_channels == 30
    assert model.transition1.conv.out_channels == 15  # half of 30
    assert model.block2.conv3.conv.out_channels == 24


def test_count_parameters_accepts_module_or_config():
    cfg = compose("model=wide").model
    assert count_parameters(build_model(cfg)) == count_parameters(cfg) == sum(p.numel() for p in build_model(cfg).parameters())


@pytest.mark.parametrize("path", sorted(CONF.glob("model/*.yaml")), ids=lambda p: p.stem)
def test_preset_comment_states_its_true_parameter_count(path):
    header = path.read_text().split("defaults:")[0].replace(",", "")
    stated = [int(n) for n in re.findall(r"(\d+) parameters", header)]
    assert stated, f"{path.name}: the header comment should state the parameter count"
    assert stated[-1] == count_parameters(compose(f"model={path.stem}").model)


AXIS_VARIANTS = [f"model={m}" for m in group_options("model")] + [
    f"model/{axis}={option}" for axis in ("widths", "norm", "dropout", "pool", "head", "conv")
    for option in group_options(f"model/{axis}")
]


@pytest.mark.parametrize("override", AXIS_VARIANTS)
def test_every_variant_builds_runs_and_gets_gradients_everywhere(override):
    cfg = compose(override)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    x = torch.randn(8, 1, 28, 28)
    logits = model(x)
    assert logits.shape == (8, 10)
    nn.functional.cross_entropy(logits, torch.arange(8) % 10).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def unit_layers(model, path="block1.conv1"):
    return list(model.get_submodule(path)._modules)


def test_bn_placement_changes_module_order():
    orders = {
        placement: unit_layers(build_model(compose(f"model/norm={placement}", "model/dropout=none").model))
        for placement in ("bn_relu", "relu_bn", "none")
    }
    assert orders == {"bn_relu": ["conv", "bn", "relu"], "relu_bn": ["conv", "relu", "bn"], "none": ["conv", "relu"]}


def dropout_paths(model):
    return [name for name, m in model.named_modules() if isinstance(m, nn.Dropout)]


def test_dropout_placement_changes_where_dropout_sits():
    conv_model = build_model(compose("model/dropout=conv").model)
    # every conv unit but the last (block2.conv3) has dropout; the transition counts as a unit
    assert dropout_paths(conv_model) == [
        "block1.conv1.dropout", "block1.conv2.dropout", "block1.conv3.dropout",
        "transition1.dropout", "block2.conv1.dropout", "block2.conv2.dropout",
    ]
    block_model = build_model(compose("model/dropout=block").model)
    assert dropout_paths(block_model) == ["block1.dropout"]  # never right before the head
    assert dropout_paths(build_model(compose("model/dropout=none").model)) == []
    rate = build_model(compose("model/dropout=block", "model.dropout.rate=0.2").model).block1.dropout.p
    assert rate == 0.2


def test_pool_position_and_transition():
    model = build_model(compose("model/pool=after2_transition").model)
    names = list(model._modules)
    assert names == ["block1", "block2", "pool2", "transition2", "head"]
    model = build_model(compose("model/pool=after1").model)
    assert list(model._modules) == ["block1", "pool1", "block2", "head"]
    assert model.block2.conv1.conv.in_channels == 20  # no 1x1 cut


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.norm.placement=batchnorm", "model.norm.placement='batchnorm' is not one of: bn_relu, relu_bn, none"),
        ("model.dropout.placement=everywhere", "model.dropout.placement='everywhere' is not one of: conv, block, none"),
        ("model.head.kind=fc", "model.head.kind='fc' is not one of: gap_conv, gap_linear, conv_gap"),
        ("model.conv.kind=depthwise", "model.conv.kind='depthwise' is not one of: full, separable"),
        ("model.widths.blocks=[[10,10],[]]",
         "model.widths.blocks: block 2 is empty; every block needs at least one conv width"),
        ("model.widths.blocks=[]", "model.widths.blocks is empty: give at least one block, e.g. [[10, 10, 20]]"),
        ("model.widths.blocks=[[10,0]]", "model.widths.blocks: block 1 has width 0; widths must be >= 1"),
        ("model.widths.multiplier=0", "model.widths.multiplier=0.0 must be > 0"),
        ("model.widths.blocks=[[8,8,8,8,8,8,8,8,8,8,8,8,8,8]]",
         "model: spatial size drops below 1 at block 1 conv 14 (28 -> 26 -> 24 -> 22 -> 20 -> 18 -> 16 -> 14 -> 12 -> 10 "
         "-> 8 -> 6 -> 4 -> 2 -> 0); use model.padding=1, fewer convs or fewer pools"),
        ("model.pool.after=[3]", "model.pool.after has block 3; the model has blocks 1..2"),
        ("model.pool.transition=1.5", "model.pool.transition=1.5 must be in (0, 1] (share of channels kept) or null"),
        ("model.pool.transition=0", "model.pool.transition=0.0 must be in (0, 1] (share of channels kept) or null"),
        ("model.pool.after=[1,1]", "model.pool.after=[1, 1] names a block twice"),
        ("model.padding=-1", "model.padding=-1 must be >= 0"),
        ("model.dropout.rate=1.0", "model.dropout.rate=1.0 must be in [0, 1)"),
        ("model.kernel_size=2", "model.kernel_size=2 must be an odd number >= 1"),
    ],
)
def test_invalid_architectures_fail_with_a_clear_message(override, message):
    with pytest.raises(ConfigError) as info:
        build_model(compose(override).model)
    assert str(info.value) == message  # one line, whole


def test_the_range_checks_edges_are_accepted():
    """A 1x1 kernel, a transition keeping every channel, no padding, no dropout: all valid."""
    model = build_model(compose("model.kernel_size=1", "model.pool.transition=1.0", "model.padding=0",
                                "model.dropout.rate=0").model)
    assert model.transition1.conv.out_channels == model.transition1.conv.in_channels == 20
    assert model.block1.conv1.conv.kernel_size == (1, 1)
    thin = build_model(compose("model.widths.blocks=[[1,1],[1]]", "model/dropout=block", "model.dropout.rate=0").model)
    assert [m.out_channels for m in thin.modules() if isinstance(m, nn.Conv2d)] == [1, 1, 1, 1, 10]  # width 1 is valid
    assert not any(isinstance(m, nn.Dropout) for m in thin.modules())  # rate 0: no dropout layer at all
    shrunk = build_model(compose("model.widths.multiplier=0.01").model)  # every width rounds to 0: kept at 1
    assert {m.out_channels for m in shrunk.modules() if isinstance(m, nn.Conv2d)} == {1, 10}
    edge = build_model(compose("model.widths.blocks=[[4,4,4,4,4,4,4,4,4,4,4,4,4]]", "model.padding=0",
                               "model.pool.after=[1]", "model.pool.transition=null").model)
    assert edge(torch.zeros(1, 1, 28, 28)).shape == (1, 10)  # 13 convs leave 2x2, which the pool halves to 1x1
    one = build_model(compose("model.widths.blocks=[[4]]", "model.pool.after=[]", "model/dropout=conv").model)
    assert list(one.block1.conv1._modules) == ["conv", "bn", "relu"]  # a net of one conv: no dropout before the head


def test_a_pool_that_would_empty_the_image_is_refused():
    cfg = compose("model.padding=1", "model.widths.blocks=[[8],[8],[8],[8],[8]]", "model.pool.after=[1,2,3,4,5]")
    with pytest.raises(ConfigError) as info:
        build_model(cfg.model)
    assert str(info.value) == ("model: spatial size drops below 1 at the pool after block 5 (28 -> 28 -> pool 14 -> 14 "
                               "-> pool 7 -> 7 -> pool 3 -> 3 -> pool 1 -> 1 -> 0); use model.padding=1, fewer convs or "
                               "fewer pools")


def test_dropout_kind_element_or_channel_same_places_same_parameters():
    element = build_model(compose("model/dropout=conv").model)
    channel = build_model(compose("model/dropout=conv", "model.dropout.kind=channel").model)
    kinds = lambda model: {name: type(m).__name__ for name, m in model.named_modules() if "dropout" in name.split(".")[-1]}
    assert set(kinds(element).values()) == {"Dropout"} and set(kinds(channel).values()) == {"Dropout2d"}
    assert list(kinds(element)) == list(kinds(channel))
    assert count_parameters(element) == count_parameters(channel) == 7988
    halves = {kind: build_model(compose("model/dropout=conv", "model.dropout.rate=0.5", f"model.dropout.kind={kind}")
                                .model).train().block1.conv1.dropout for kind in ("element", "channel")}
    torch.manual_seed(0)
    maps = {kind: layer(torch.ones(8, 10, 6, 6)).flatten(2) for kind, layer in halves.items()}
    whole = lambda m: bool(((m == 0).all(-1) | (m != 0).all(-1)).all())  # every map all dropped or all kept
    assert whole(maps["channel"]) and not whole(maps["element"])
    with pytest.raises(ConfigError, match="model.dropout.kind='spatial' is not one of: element, channel"):
        build_model(compose("model.dropout.kind=spatial").model)


def separable(c_in, c_out, k, bias):
    return c_in * k * k + conv(c_in, c_out, 1, bias)


def test_separable_s4_parameter_count_by_hand():
    # the first conv reads one channel and stays full; the 1x1 transition and the head are 1x1 already
    expected = (
        conv(1, 10, 3, False) + bn(10) + separable(10, 10, 3, False) + bn(10) + separable(10, 20, 3, False) + bn(20)
        + conv(20, 10, 1, False) + bn(10)
        + separable(10, 10, 3, False) + bn(10) + separable(10, 16, 3, False) + bn(16) + separable(16, 16, 3, False)
        + bn(16) + conv(16, 10, 1, True)
    )
    assert expected == 1964
    assert count_parameters(compose("model=s4", "model/conv=separable").model) == expected
    # without BatchNorm right after it, the 1x1 conv keeps its bias; the depthwise one never has one
    plain = count_parameters(compose("model=plain", "model/conv=separable").model)
    assert plain == (conv(1, 10, 3, True) + separable(10, 10, 3, True) + separable(10, 20, 3, True)
                     + conv(20, 10, 1, True) + separable(10, 10, 3, True) + separable(10, 16, 3, True)
                     + separable(16, 16, 3, True) + conv(16, 10, 1, True)) == 1872


def test_separable_splits_every_conv_reading_more_than_one_channel_with_a_kernel_over_one():
    two = build_model(compose("model=s4", "model.widths.blocks=[[2,4],[4]]", "model/conv=separable").model)
    assert unit_layers(two, "block1.conv1") == ["conv", "bn", "relu"]  # one channel in: nothing to split
    assert unit_layers(two, "block1.conv2")[:2] == ["depthwise", "conv"]  # two channels in
    assert two.block1.conv2.depthwise.groups == 2
    pointwise = compose("model=s4", "model.kernel_size=1")  # 1x1 convs are pointwise already: the same net
    assert count_parameters(compose("model=s4", "model.kernel_size=1", "model/conv=separable").model) == \
        count_parameters(pointwise.model) == 7988 - 8 * (10 + 100 + 200 + 100 + 160 + 256)  # six 3x3 convs lose 8/9


def test_a_separable_unit_is_a_depthwise_conv_then_a_1x1_conv_with_the_full_units_shapes():
    full = build_model(compose("model=s4", "model.padding=1", "model/dropout=none").model)
    split = build_model(compose("model=s4", "model.padding=1", "model/dropout=none", "model/conv=separable").model)
    assert unit_layers(split, "block1.conv1") == unit_layers(full, "block1.conv1") == ["conv", "bn", "relu"]
    assert unit_layers(split, "block1.conv2") == ["depthwise", "conv", "bn", "relu"]
    assert unit_layers(split, "transition1") == ["conv", "bn", "relu"]
    unit = split.block1.conv2
    assert (unit.depthwise.groups, unit.depthwise.kernel_size, unit.depthwise.padding, unit.depthwise.bias) == (
        10, (3, 3), (1, 1), None)
    assert (unit.conv.in_channels, unit.conv.out_channels, unit.conv.kernel_size) == (10, 10, (1, 1))
    x = torch.randn(2, 1, 28, 28)
    for path in ("block1", "block2"):  # every block's output the same size either way
        assert full.get_submodule(path)(torch.zeros(2, full.get_submodule(path).conv1.conv.in_channels, 14, 14)).shape \
            == split.get_submodule(path)(torch.zeros(2, split.get_submodule(path).conv1.conv.in_channels, 14, 14)).shape
    assert split(x).shape == full(x).shape == (2, 10)
