"""Several seeds of one net trained as one model: the copies side by side in grouped convolutions (as HFTA fuses them).

    python -m mnist_arch.fused --out docs/results/NAME --seeds 11 12 -- +experiment=small_end_t21 data.val_size=0

``fit_fused(cfg, seeds)`` trains the net ``cfg`` describes once per seed, as ``fit`` would with
``seed=S``, in one model: every conv of c_in -> c_out channels becomes one conv of K*c_in -> K*c_out
in K groups, every BatchNorm one of K*c channels; pooling, ReLU, dropout and the global average
act per channel already. On this project's CPU it trains about 1.3 times the images per second of
the K seeds one at a time (``benchmarks/fused_seeds.py``; README, Measured).

The same as K runs of ``fit``: each copy's initial weights (built after ``torch.manual_seed(S)``),
its shuffle and augmentation (its own generator, seeded S), its gradient (the loss is the sum of
the copies' mean losses), and its optimizer, schedule and weight-average steps (all element by
element, so one optimizer over the fused weights steps each copy as its own would). Not the same:
the dropout masks come from one generator for all copies, and a grouped convolution adds in
another order than K small ones (a difference of 1e-7 in the weights, which training amplifies to
the size of seed-to-seed noise within tens of steps, as it would any such difference). So a copy's
run is another draw of the same training, not a bit-for-bit copy of ``fit``'s run with its seed.
For seed studies, not sweeps: no callbacks, checkpoints or tracking. Not yet used for claims: four
fused seeds of ``small_end_t21`` scored 0.07 below the same seeds run alone (se 0.03), with no cause
found (docs/measured.md, Fused seeds).
"""

import argparse
import copy
import json
import logging
import math
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from .config import compose_config
from .data import augment, load_mnist
from .errors import ConfigError
from .model import count_parameters
from .trainer import _build_run, check_budget, check_config, resolve_device, summarize, train_step, training_parts

log = logging.getLogger(__name__)

PER_CHANNEL = (nn.ReLU, nn.MaxPool2d, nn.Dropout, nn.Dropout2d, nn.AdaptiveAvgPool2d, nn.Flatten)


def fuse(models: Sequence[nn.Module]) -> nn.Module:
    """One module computing all of ``models`` (one layout) side by side: input and output channels K-fold.

    The weights are copied in, copy k in group k, on the models' device and in their precision.
    Convolutions, BatchNorm and per-channel layers only: a Linear layer
    (``model.head.kind=gap_linear``) has no grouped form here and is refused.
    """
    k, first = len(models), models[0]
    if isinstance(first, nn.Conv2d):
        fused: nn.Module = nn.Conv2d(k * first.in_channels, k * first.out_channels, first.kernel_size, stride=first.stride,
                                     padding=first.padding, dilation=first.dilation, groups=k * first.groups,
                                     bias=first.bias is not None, device=first.weight.device, dtype=first.weight.dtype)
    elif isinstance(first, nn.BatchNorm2d):
        fused = nn.BatchNorm2d(k * first.num_features, eps=first.eps, momentum=first.momentum, affine=first.affine,
                               device=first.running_mean.device, dtype=first.running_mean.dtype)
    elif isinstance(first, nn.Sequential):
        return nn.Sequential(OrderedDict((name, fuse([m._modules[name] for m in models])) for name in first._modules))
    elif isinstance(first, PER_CHANNEL):
        return copy.deepcopy(first)
    else:
        raise ConfigError(f"{type(first).__name__} has no fused form here; fused seeds need conv heads "
                          "(model.head.kind=gap_conv or conv_gap)")
    with torch.no_grad():
        for name, tensor in [*fused.named_parameters(), *fused.named_buffers()]:
            if name != "num_batches_tracked":
                tensor.copy_(torch.cat([getattr(m, name) for m in models]))
    return fused


@torch.inference_mode()
def evaluate_copies(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, k: int) -> List[Dict[str, float]]:
    """Each copy's mean cross-entropy and accuracy (percent) over a whole split, all copies reading the same images."""
    model.eval()
    losses = torch.zeros(k, device=x.device)
    hits = torch.zeros(k, dtype=torch.long, device=x.device)
    for start in range(0, len(x), batch_size):
        target = y[start : start + batch_size, None].expand(-1, k)
        logits = model(x[start : start + batch_size].expand(-1, k, -1, -1)).view(len(target), k, -1)
        losses += F.cross_entropy(logits.transpose(1, 2), target, reduction="none").sum(0)
        hits += (logits.argmax(-1) == target).sum(0)
    n = max(1, len(x))
    return [{"loss": loss / n, "acc": 100.0 * hit / n} for loss, hit in zip(losses.tolist(), hits.tolist())]


def _check(cfg: Any, seeds: Sequence[int]) -> None:
    if len(seeds) < 1 or len(set(seeds)) != len(seeds):
        raise ConfigError(f"fused seeds {list(seeds)}: give one or more distinct seeds")
    if cfg.trainer.bn_recompute:
        raise ConfigError("trainer.bn_recompute is not supported by fused seeds; train these seeds one at a time")
    if cfg.tracking.kind != "none":
        raise ConfigError(f"tracking={cfg.tracking.kind}: fused seeds are not tracked; leave tracking=none")


def fit_fused(cfg: Any, seeds: Sequence[int]) -> List[Dict[str, Any]]:
    """Train the net ``cfg`` describes once per seed, all in one fused model; ``fit``'s result per seed, in order."""
    check_config(cfg)
    _check(cfg, seeds)
    k = len(seeds)
    n_params = count_parameters(cfg.model)
    check_budget(n_params, cfg.budget.max_params)  # before any data is loaded, as fit does
    device = resolve_device(cfg.trainer.device)
    if cfg.trainer.threads is not None and device.type == "cpu":
        torch.set_num_threads(cfg.trainer.threads)
    started = time.perf_counter()
    data = load_mnist(cfg.data, device)
    epochs, bs = cfg.trainer.epochs, cfg.trainer.batch_size
    steps_per_epoch = math.ceil(len(data.train_x) / bs)
    runs = [_build_run(OmegaConf.merge(cfg, {"seed": s}), device, steps_per_epoch) for s in seeds]
    model = fuse([run[0] for run in runs]).to(device)
    if cfg.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    generators = [run[4] for run in runs]
    torch.manual_seed(seeds[0])  # dropout: one generator for every copy
    opt, schedule, average = training_parts(model, cfg, steps_per_epoch)
    evaluated = average.module if average is not None else model
    log.info("training %d fused copies of %s parameters (seeds %s) on %s: %d epochs of %d steps", k, f"{n_params:,}",
             ", ".join(map(str, seeds)), device, epochs, steps_per_epoch)
    histories: List[List[Dict[str, Any]]] = [[] for _ in seeds]
    x, y, n = data.train_x, data.train_y, len(data.train_x)
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        lr = opt.param_groups[0]["lr"]
        model.train()
        orders = [torch.randperm(n, generator=g, device=g.device) for g in generators]
        loss_sum = torch.zeros(k, device=device)
        hits = torch.zeros(k, dtype=torch.long, device=device)
        for start in range(0, n, bs):
            batches = [(x[order[start : start + bs]], y[order[start : start + bs]]) for order in orders]
            if cfg.data.augment.enabled:
                batches = [(augment(xb, cfg.data.augment, g), yb) for (xb, yb), g in zip(batches, generators)]
            yb = torch.stack([b[1] for b in batches], 1)
            loss, logits = train_step(model, opt, schedule, average, torch.cat([b[0] for b in batches], 1), yb,
                                      cfg.trainer.label_smoothing)
            loss_sum += loss * len(yb)
            hits += (logits.argmax(-1) == yb).sum(0)
        t_eval = time.perf_counter()
        tests = evaluate_copies(evaluated, data.test_x, data.test_y, cfg.trainer.eval_batch_size, k)
        vals: List[Optional[Dict[str, float]]] = [None] * k
        if len(data.val_x):
            vals = list(evaluate_copies(evaluated, data.val_x, data.val_y, cfg.trainer.eval_batch_size, k))
        t2 = time.perf_counter()
        for i, (history, test, val) in enumerate(zip(histories, tests, vals)):
            record: Dict[str, Any] = {"epoch": epoch, "train_loss": loss_sum[i].item() / n,
                                      "train_acc": 100.0 * hits[i].item() / n, "test_loss": test["loss"],
                                      "test_acc": test["acc"]}
            if val is not None:
                record.update(val_loss=val["loss"], val_acc=val["acc"])
            record.update(lr=lr, seconds=t2 - t0, eval_seconds=t2 - t_eval)
            history.append(record)
        log.info("epoch %2d/%d  test acc %s  lr %.4f  %.1fs", epoch, epochs,
                 " ".join(f"{h[-1]['test_acc']:.2f}%" for h in histories), lr, t2 - t0)
    seconds = time.perf_counter() - started
    results = []
    for history in histories:
        summary = summarize(history, cfg.objective.target_acc, cfg.objective.last_k)
        results.append({"n_params": n_params, "device": str(device), **summary, "stopped_early": False,
                        "stop_reason": None, "seconds": seconds, "history": history, "fused_seeds": list(seeds),
                        "objective_metric": cfg.objective.metric, "objective": summary[cfg.objective.metric]})
    return results


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for seedS.metrics.json / seedS.config.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", required=True,
                        help="the seeds to train together, each once (distinct)")
    parser.add_argument("overrides", nargs="*", help="mnist-train overrides (no seed=: the seeds are --seeds)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    if any(o.lstrip("+~").startswith("seed=") for o in args.overrides):
        parser.error("give the seeds with --seeds, not seed=")
    cfg = compose_config(args.overrides)
    results = fit_fused(cfg, args.seeds)
    args.out.mkdir(parents=True, exist_ok=True)
    for seed, result in zip(args.seeds, results):
        record = {"seed": seed, "overrides": [*args.overrides, f"seed={seed}"], **result}
        (args.out / f"seed{seed}.metrics.json").write_text(json.dumps(record, indent=2))
        OmegaConf.save(OmegaConf.merge(cfg, {"seed": seed}), args.out / f"seed{seed}.config.yaml")
        log.info("seed %d: best test acc %.2f%% (epoch %d), min of the last %d epochs %.2f%%", seed,
                 result["best_test_acc"], result["best_epoch"], cfg.objective.last_k, result["min_last_k_test_acc"])


if __name__ == "__main__":
    main()
