"""``mnist-summary``: the layers of a model config with output shape, parameters and receptive field.

    mnist-summary                       # the default model (s4)
    mnist-summary model=wide model/norm=relu_bn

Takes the same overrides as ``mnist-train``. Builds the model and runs one forward pass on a
blank image: no data, no training, nothing written.
"""

from typing import Any, Dict, List

import sys

import torch
from torch import nn

from .config import compose_config
from .errors import report_in_one_line
from .model import build_model, count_parameters, input_shape

SPATIAL = (nn.Conv2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d)


def layer_table(model_cfg: Any) -> List[Dict[str, Any]]:
    """One row per leaf layer, in forward order: name, kind, output shape, parameters, receptive field.

    The receptive field (in input pixels) grows by ``(kernel - 1) * jump`` at each conv or pool,
    where ``jump`` is the product of the strides so far; global pooling sees its whole input.
    """
    model = build_model(model_cfg).eval()
    leaves = [(name, m) for name, m in model.named_modules() if len(m._modules) == 0]
    shapes: Dict[str, tuple] = {}
    in_sizes: Dict[str, int] = {}
    hooks = []
    for name, module in leaves:
        def hook(mod, inputs, output, name=name):
            shapes[name] = tuple(output.shape[1:])
            in_sizes[name] = inputs[0].shape[-1]
        hooks.append(module.register_forward_hook(hook))
    with torch.no_grad():
        model(torch.zeros(input_shape(model_cfg)))
    for h in hooks:
        h.remove()

    rows, rf, jump = [], 1, 1
    for name, module in leaves:
        if isinstance(module, nn.Conv2d):
            rf += (module.kernel_size[0] - 1) * module.dilation[0] * jump
            jump *= module.stride[0]
        elif isinstance(module, nn.MaxPool2d):
            rf += (module.kernel_size - 1) * jump
            jump *= module.stride
        elif isinstance(module, nn.AdaptiveAvgPool2d):
            rf += (in_sizes[name] - 1) * jump
        rows.append({
            "layer": name,
            "kind": type(module).__name__,
            "output": "x".join(str(s) for s in shapes[name]),
            "params": sum(p.numel() for p in module.parameters()),
            "rf": rf,
        })
    return rows


def format_table(rows: List[Dict[str, Any]], total: int) -> str:
    headers = {"layer": "layer", "kind": "kind", "output": "output (CxHxW)", "params": "params", "rf": "RF"}
    cells = [{k: f"{r[k]:,}" if k == "params" else str(r[k]) for k in headers} for r in rows]
    widths = {k: max(len(headers[k]), *(len(c[k]) for c in cells)) for k in headers}
    right = {"params", "rf"}

    def line(c: Dict[str, str]) -> str:
        return "  ".join(c[k].rjust(widths[k]) if k in right else c[k].ljust(widths[k]) for k in headers).rstrip()

    rule = "-" * len(line(headers))
    return "\n".join([line(headers), rule, *(line(c) for c in cells), rule, f"total parameters: {total:,}"])


def summary(overrides: List[str]) -> str:
    cfg = compose_config(overrides)
    total = count_parameters(cfg.model)
    text = format_table(layer_table(cfg.model), total)
    max_params = cfg.budget.max_params
    if max_params is not None:
        text += f"\nbudget.max_params: {max_params:,} ({'within' if total <= max_params else 'OVER'} budget)"
    return text


def main(argv: List[str] = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in args):
        print(__doc__.strip())
        return
    report_in_one_line("mnist-summary: ", lambda: print(summary(args)))


if __name__ == "__main__":
    main()
