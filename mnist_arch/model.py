"""Build a small CNN from the ``model`` config node.

The node is composed from one Hydra config group per architecture axis (``model/widths``,
``model/norm``, ``model/dropout``, ``model/pool``, ``model/head``). The builder walks the list of
blocks, each a list of conv widths, and picks every layer kind by dictionary lookup; an unknown
name fails at once with the valid names listed.

Layout of the network, by name (the names appear in ``mnist-summary``)::

    block1: conv1 .. convN      each conv unit: conv + norm/activation in the chosen order
                                (separable: a depthwise k x k conv, then the 1x1 ``conv``)
    pool1                       2x2 max-pool after the blocks listed in pool.after
    transition1                 optional 1x1 conv unit that cuts channels after that pool
    block2: ...
    head                        global average pooling and a 1x1 conv or linear layer to classes

Rules that are easy to forget:
- conv bias is off when BatchNorm follows the conv directly (``bn_relu``): BN's shift replaces it;
- dropout is never placed right before the head (``conv``: every conv unit but the last one;
  ``block``: the end of every block but the last one);
- ``model.conv.kind=separable`` splits every k x k conv that reads more than one channel into a
  depthwise conv (one k x k filter per input channel, no bias) and a 1x1 conv across channels
  (MobileNet's and Xception's block): c_in * (k*k + c_out) weights instead of c_in * c_out * k*k.
  The first conv reads the one image channel and stays full, as do the 1x1 transitions.
"""

from collections import OrderedDict
from typing import Any, Callable, Dict, List, Tuple

from torch import nn

from .errors import ConfigError, lookup

# Order of the layers that follow each conv, per BatchNorm placement.
NORM_PLACEMENTS: Dict[str, Tuple[str, ...]] = {
    "bn_relu": ("bn", "relu"),
    "relu_bn": ("relu", "bn"),
    "none": ("relu",),
}
DROPOUT_PLACEMENTS: Tuple[str, ...] = ("conv", "block", "none")
# element: each activation dropped alone; channel: whole feature maps (nn.Dropout2d), which
# neighbouring pixels' correlation makes the stronger regulariser for convs.
DROPOUT_KINDS: Dict[str, Callable[[float], nn.Module]] = {"element": nn.Dropout, "channel": nn.Dropout2d}
CONV_KINDS: Dict[str, bool] = {"full": False, "separable": True}  # whether the k x k convs are split


def _gap_conv(channels: int, classes: int) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(gap=nn.AdaptiveAvgPool2d(1), conv=nn.Conv2d(channels, classes, 1), flatten=nn.Flatten())
    )


def _gap_linear(channels: int, classes: int) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(gap=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(channels, classes))
    )


def _conv_gap(channels: int, classes: int) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(conv=nn.Conv2d(channels, classes, 1), gap=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten())
    )


# All three have channels * classes + classes parameters; they differ in where the class map is
# computed (conv_gap keeps a spatial class map, which some users want for visualisation).
HEADS: Dict[str, Callable[[int, int], nn.Module]] = {
    "gap_conv": _gap_conv,
    "gap_linear": _gap_linear,
    "conv_gap": _conv_gap,
}


def _conv_unit(c_in: int, c_out: int, kernel: int, padding: int, order: Tuple[str, ...], dropout: float,
               make_dropout: Callable[[float], nn.Module] = nn.Dropout, separable: bool = False) -> nn.Sequential:
    layers: "OrderedDict[str, nn.Module]" = OrderedDict()
    if separable and c_in > 1 and kernel > 1:
        layers["depthwise"] = nn.Conv2d(c_in, c_in, kernel, padding=padding, groups=c_in, bias=False)
        layers["conv"] = nn.Conv2d(c_in, c_out, 1, bias=order[0] != "bn")
    else:
        layers["conv"] = nn.Conv2d(c_in, c_out, kernel, padding=padding, bias=order[0] != "bn")
    for kind in order:
        layers[kind] = nn.BatchNorm2d(c_out) if kind == "bn" else nn.ReLU(inplace=True)
    if dropout > 0:
        layers["dropout"] = make_dropout(dropout)
    return nn.Sequential(layers)


def scaled_widths(cfg: Any) -> List[List[int]]:
    """The conv widths per block after ``model.widths.multiplier``, validated."""
    blocks = cfg.widths.blocks
    multiplier = float(cfg.widths.multiplier)
    if multiplier <= 0:
        raise ConfigError(f"model.widths.multiplier={multiplier} must be > 0")
    if len(blocks) == 0:
        raise ConfigError("model.widths.blocks is empty: give at least one block, e.g. [[10, 10, 20]]")
    result = []
    for i, block in enumerate(blocks, 1):
        if len(block) == 0:
            raise ConfigError(f"model.widths.blocks: block {i} is empty; every block needs at least one conv width")
        for w in block:
            if w < 1:
                raise ConfigError(f"model.widths.blocks: block {i} has width {w}; widths must be >= 1")
        result.append([max(1, round(w * multiplier)) for w in block])
    return result


def _check_ranges(cfg: Any, n_blocks: int) -> None:
    if cfg.kernel_size < 1 or cfg.kernel_size % 2 == 0:
        raise ConfigError(f"model.kernel_size={cfg.kernel_size} must be an odd number >= 1")
    if cfg.padding < 0:
        raise ConfigError(f"model.padding={cfg.padding} must be >= 0")
    if not 0.0 <= cfg.dropout.rate < 1.0:
        raise ConfigError(f"model.dropout.rate={cfg.dropout.rate} must be in [0, 1)")
    for b in cfg.pool.after:
        if not 1 <= b <= n_blocks:
            raise ConfigError(f"model.pool.after has block {b}; the model has blocks 1..{n_blocks}")
    if len(set(cfg.pool.after)) != len(cfg.pool.after):
        raise ConfigError(f"model.pool.after={list(cfg.pool.after)} names a block twice")
    t = cfg.pool.transition
    if t is not None and not 0.0 < t <= 1.0:
        raise ConfigError(f"model.pool.transition={t} must be in (0, 1] (share of channels kept) or null")


def build_model(cfg: Any) -> nn.Sequential:
    """Build the network described by a ``model`` config node (an OmegaConf node or the dataclass).

    Raises ConfigError for unknown names, out-of-range values, empty blocks and a spatial size
    that drops below 1.
    """
    order = lookup(NORM_PLACEMENTS, cfg.norm.placement, "model.norm.placement")
    dropout_placement = cfg.dropout.placement
    lookup(dict.fromkeys(DROPOUT_PLACEMENTS), dropout_placement, "model.dropout.placement")
    make_dropout = lookup(DROPOUT_KINDS, cfg.dropout.kind, "model.dropout.kind")
    make_head = lookup(HEADS, cfg.head.kind, "model.head.kind")
    separable = lookup(CONV_KINDS, cfg.conv.kind, "model.conv.kind")
    blocks = scaled_widths(cfg)
    _check_ranges(cfg, len(blocks))

    rate = float(cfg.dropout.rate)
    unit_rate = rate if dropout_placement == "conv" else 0.0
    k, p = int(cfg.kernel_size), int(cfg.padding)
    channels, size = int(cfg.in_channels), int(cfg.image_size)
    trace = [str(size)]  # spatial sizes so far, for the error message
    units: List[nn.Sequential] = []
    layers: "OrderedDict[str, nn.Module]" = OrderedDict()

    for b, widths in enumerate(blocks, 1):
        block: "OrderedDict[str, nn.Module]" = OrderedDict()
        for c, width in enumerate(widths, 1):
            size = size + 2 * p - k + 1
            trace.append(str(size))
            if size < 1:
                raise ConfigError(
                    f"model: spatial size drops below 1 at block {b} conv {c} ({' -> '.join(trace)}); "
                    "use model.padding=1, fewer convs or fewer pools"
                )
            block[f"conv{c}"] = _conv_unit(channels, width, k, p, order, unit_rate, make_dropout, separable)
            units.append(block[f"conv{c}"])
            channels = width
        if dropout_placement == "block" and rate > 0 and b < len(blocks):
            block["dropout"] = make_dropout(rate)
        layers[f"block{b}"] = nn.Sequential(block)
        if b in cfg.pool.after:
            if size < 2:
                raise ConfigError(
                    f"model: spatial size drops below 1 at the pool after block {b} ({' -> '.join(trace)} -> 0); "
                    "use model.padding=1, fewer convs or fewer pools"
                )
            size //= 2
            trace.append(f"pool {size}")
            layers[f"pool{b}"] = nn.MaxPool2d(2)
            if cfg.pool.transition is not None:
                cut = max(1, round(channels * cfg.pool.transition))
                layers[f"transition{b}"] = _conv_unit(channels, cut, 1, 0, order, unit_rate, make_dropout)
                units.append(layers[f"transition{b}"])
                channels = cut

    # No dropout right before the head.
    if "dropout" in units[-1]._modules:
        del units[-1]._modules["dropout"]
    layers["head"] = make_head(channels, int(cfg.num_classes))
    return nn.Sequential(layers)


def count_parameters(model_or_cfg: Any) -> int:
    """Exact number of parameters of a module, or of the model a ``model`` config node describes.

    Building the model is cheap (milliseconds, no data, no training), so the count is always taken
    from the real module: ``sum(p.numel() for p in model.parameters())``.
    """
    model = model_or_cfg if isinstance(model_or_cfg, nn.Module) else build_model(model_or_cfg)
    return sum(p.numel() for p in model.parameters())


def count_config_parameters(cfg: Any) -> int:
    """Parameters of the model a whole training config describes: the sweeper's budget measure.

    conf/train.yaml names it in ``hydra.sweeper.budget.measure``, so every trial is counted from its
    composed config before it is launched.
    """
    return count_parameters(cfg.model)


def input_shape(cfg: Any, batch: int = 1) -> Tuple[int, int, int, int]:
    return (batch, int(cfg.in_channels), int(cfg.image_size), int(cfg.image_size))
