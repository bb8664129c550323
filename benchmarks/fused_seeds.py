"""Several seeds of one net in one model (grouped convolutions, as HFTA fuses them) against one at a time.

    python benchmarks/fused_seeds.py +experiment=small_end_t21            # K = 2, 4 and 8 seeds, 1 CPU thread
    python benchmarks/fused_seeds.py --seeds 4 --threads 2 --steps 200 +experiment=small_end_t21

K copies of the net the overrides compose, fused into one as ``mnist_arch.fused`` trains them
(``python -m mnist_arch.fused``): each copy with its own images, stacked as the fused input's K
channels, and one optimizer over the fused weights.

Measured, in one process at the same thread count, over the same number of training steps
(batch, augmentation, forward, backward, optimizer and schedule step, weight-average update):
training images per second summed over the K seeds, fused against the K seeds one at a time, and
the ratio. Each arm runs twice, in the order one-fused-fused-one, so a machine whose load drifts
(other runs beside it) weighs on both alike; each figure is the arm's images over its seconds.
Before timing, the fused model is checked to compute what the K nets compute (weights copied in,
eval mode).
Prints a Markdown table; only that check is asserted.
"""

import argparse
import math
import sys
import time
from pathlib import Path

import torch
from torch import nn
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mnist_arch.config import compose_config  # noqa: E402
from mnist_arch.data import augment, load_mnist  # noqa: E402
from mnist_arch.fused import fuse  # noqa: E402
from mnist_arch.model import build_model, count_parameters  # noqa: E402
from mnist_arch.trainer import _build_run, train_step, training_parts  # noqa: E402


def check_fused(cfg, k: int) -> None:
    """The fused model's logits are the K nets' logits, copy by copy (eval mode, weights copied in)."""
    nets = []
    for s in range(k):
        torch.manual_seed(100 + s)
        net = build_model(cfg.model)
        for m in net.modules():  # BatchNorm statistics other than the defaults, so their copy is checked too
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        nets.append(net.eval())
    fused = fuse(nets).eval()
    x = torch.randn(k, 5, 1, 28, 28)
    with torch.no_grad():
        want = torch.stack([net(x[s]) for s, net in enumerate(nets)], 1)  # (5, K, classes)
        got = fused(x.squeeze(2).permute(1, 0, 2, 3)).view(5, k, -1)
    assert torch.allclose(got, want, atol=1e-4), float((got - want).abs().max())


def one_run(cfg, seed: int, steps_per_epoch: int):
    """Model, optimizer, schedule, weight average and generator of the seed's run, as the trainer builds them."""
    return _build_run(OmegaConf.merge(cfg, {"seed": seed}), torch.device("cpu"), steps_per_epoch)


def batches(data, cfg, generator, steps: int):
    bs = cfg.trainer.batch_size
    order = torch.randperm(len(data.train_x), generator=generator)
    for i in range(steps):
        idx = order[i * bs : (i + 1) * bs]
        xb = data.train_x[idx]
        yield (augment(xb, cfg.data.augment, generator) if cfg.data.augment.enabled else xb), data.train_y[idx]


def separate(cfg, data, k: int, steps: int, warmup: int) -> float:
    """Seconds for ``steps`` steps of each of the K seeds, one seed after another."""
    steps_per_epoch = math.ceil(len(data.train_x) / cfg.trainer.batch_size)
    runs = [one_run(cfg, s, steps_per_epoch) for s in range(k)]
    seconds = 0.0
    for model, opt, schedule, average, generator in runs:
        model.train()
        for i, (xb, yb) in enumerate(batches(data, cfg, generator, warmup + steps)):
            if i == warmup:
                started = time.perf_counter()
            train_step(model, opt, schedule, average, xb, yb)
        seconds += time.perf_counter() - started
    return seconds


def fused(cfg, data, k: int, steps: int, warmup: int) -> float:
    """Seconds for ``steps`` steps of the K seeds as one fused model, each seed with its own batches."""
    steps_per_epoch = math.ceil(len(data.train_x) / cfg.trainer.batch_size)
    runs = [one_run(cfg, s, steps_per_epoch) for s in range(k)]
    model = fuse([r[0] for r in runs]).train()
    if cfg.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt, schedule, average = training_parts(model, cfg, steps_per_epoch)
    streams = [batches(data, cfg, r[4], warmup + steps) for r in runs]
    for i in range(warmup + steps):
        if i == warmup:
            started = time.perf_counter()
        pairs = [next(s) for s in streams]
        xb = torch.cat([x for x, _ in pairs], 1)  # (B, K, 28, 28): copy k reads channel k
        yb = torch.stack([y for _, y in pairs], 1)  # (B, K)
        train_step(model, opt, schedule, average, xb, yb)
    return time.perf_counter() - started


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[2, 4, 8], help="K: seeds fused into one model")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=300, help="timed training steps per seed")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("overrides", nargs="*", help="mnist-train overrides (the net to fuse)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = compose_config(args.overrides)
    data = load_mnist(cfg.data)
    n = count_parameters(build_model(cfg.model))
    print(f"{n:,} parameters, batch {cfg.trainer.batch_size}, {args.threads} thread(s), {args.steps} steps per seed, "
          f"torch {torch.__version__}, overrides: {' '.join(args.overrides) or '(none)'}\n")
    print("| seeds (K) | one at a time, img/s | fused, img/s | fused / one at a time |")
    print("| ---: | ---: | ---: | ---: |")
    for k in args.seeds:
        check_fused(cfg, k)
        images = 2 * k * args.steps * cfg.trainer.batch_size  # per arm, both of its runs
        one = separate(cfg, data, k, args.steps, args.warmup)
        both = fused(cfg, data, k, args.steps, args.warmup) + fused(cfg, data, k, args.steps, args.warmup)
        one += separate(cfg, data, k, args.steps, args.warmup)
        print(f"| {k} | {images / one:,.0f} | {images / both:,.0f} | {one / both:.2f} |", flush=True)


if __name__ == "__main__":
    main()
