"""The training loop: data on the device as tensors, batches as index slices, batched augmentation.

``fit(cfg)`` trains the model the config describes and returns a result dict (per-epoch history
and summary metrics). It knows nothing about sweeps: progress goes out through plain callbacks,
objects with ``on_epoch_end(epoch, record)`` that may return True to stop the run, and optionally
``on_train_start()`` (the config checked, the model within budget, the data loaded) and
``on_train_end(result)``.

Checkpoints, also through callbacks (``checkpoint.py`` says what a checkpoint holds): a callback
with ``on_checkpoint(path, epoch)`` is handed the run's full state after every epoch that does not
end the run early (the file is the trainer's, valid until the call returns); one with
``resume_from(path) -> bool`` is asked at the start to write a checkpoint to ``path`` (True) or
say there is none. A run resumed from epoch ``k`` trains from epoch ``k+1`` exactly as the
uninterrupted run would, and callbacks with ``on_resumed(epoch, history)`` are told. Without
such callbacks nothing is saved.
"""

import logging
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from . import checkpoint
from .data import MnistTensors, augment, load_mnist
from .errors import ConfigError, OverBudgetError
from .model import build_model, count_parameters
from .optim import build_optimizer, build_schedule, check_optim, check_schedule

log = logging.getLogger(__name__)


class EpochCallback(Protocol):
    """What the trainer calls. ``on_train_start()`` and ``on_train_end(result)`` are optional."""

    def on_epoch_end(self, epoch: int, record: Dict[str, Any]) -> Optional[bool]:
        """Called after each epoch's evaluation; return True to stop training."""


# What a run can return to a sweep (objective.metric): the summary metrics ``summarize`` computes,
# all accuracies in percent, higher is better. The *_val_acc ones need a validation split.
OBJECTIVES = ("best_test_acc", "final_test_acc", "min_last_k_test_acc", "best_val_acc", "final_val_acc",
              "min_last_k_val_acc")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"trainer.device={name!r} is not one of: auto, cpu, cuda, cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={name!r} but CUDA is not available here; use trainer.device=auto or cpu")
    return device


def check_config(cfg: Any) -> None:
    """Range checks the schema's types cannot express; one ConfigError per bad value."""
    t = cfg.trainer
    if t.epochs < 1:
        raise ConfigError(f"trainer.epochs={t.epochs} must be >= 1")
    if t.batch_size < 1:
        raise ConfigError(f"trainer.batch_size={t.batch_size} must be >= 1")
    if t.eval_batch_size < 1:
        raise ConfigError(f"trainer.eval_batch_size={t.eval_batch_size} must be >= 1")
    if t.threads is not None and t.threads < 1:
        raise ConfigError(f"trainer.threads={t.threads} must be >= 1 or null")
    if t.ema is not None and not 0.0 <= t.ema < 1.0:
        raise ConfigError(f"trainer.ema={t.ema} must be a decay in [0, 1), e.g. 0.999; 0 or null: no average")
    if t.bn_recompute < 0:
        raise ConfigError(f"trainer.bn_recompute={t.bn_recompute} must be >= 0 (batches; 0: off)")
    if not 0.0 <= t.label_smoothing < 1.0:
        raise ConfigError(f"trainer.label_smoothing={t.label_smoothing} must be in [0, 1)")
    aug = cfg.data.augment
    if not (0.0 <= aug.brightness <= 1.0 and 0.0 <= aug.contrast < 1.0):
        raise ConfigError(f"data.augment.brightness={aug.brightness} must be in [0, 1] and "
                          f"data.augment.contrast={aug.contrast} in [0, 1)")
    if cfg.objective.metric not in OBJECTIVES:
        raise ConfigError(f"objective.metric={cfg.objective.metric!r} is not one of: {', '.join(OBJECTIVES)}")
    if cfg.objective.last_k < 1:
        raise ConfigError(f"objective.last_k={cfg.objective.last_k} must be >= 1")
    if "val" in cfg.objective.metric and cfg.data.val_size == 0:
        raise ConfigError(f"objective.metric={cfg.objective.metric} needs a validation split: set data.val_size > 0")
    check_optim(cfg.optim)
    check_schedule(cfg.schedule, t.epochs)
    max_params = cfg.budget.max_params
    if max_params is not None and max_params < 1:
        raise ConfigError(f"budget.max_params={max_params} must be a positive number, or null to turn the guard off")


def check_budget(n_params: int, max_params: Optional[int]) -> None:
    if max_params is not None and n_params > max_params:
        raise OverBudgetError(n_params, max_params)


def ema_decays(decay: float, warmup: bool):
    """``multi_avg_fn`` of an exponential moving average for ``AveragedModel``.

    Without warm-up it is torch's own (every update uses ``decay``, from the copy of the first
    step's weights on). With it, the update after ``n`` averaged steps uses
    ``min(decay, (1 + n) / (10 + n))``: 2/11, 3/12, 4/13, ... so the average follows the raw weights
    at first and forgets the initial ones within an epoch. ``n`` is the model's own count, a device
    tensor: the decay is computed there, with no host sync per step.
    """
    if not warmup:
        return get_ema_multi_avg_fn(decay)

    @torch.no_grad()
    def update(averaged: List[torch.Tensor], current: List[torch.Tensor], num_averaged: torch.Tensor) -> None:
        n = num_averaged.double()
        d = torch.clamp((1 + n) / (10 + n), max=decay)
        for a, c in zip(averaged, current):
            if a.is_floating_point():
                a.lerp_(c, (1 - d).to(a.dtype))
            else:  # integer buffers (BatchNorm's batch count), as torch's own EMA treats them
                a.copy_(a * d + c * (1 - d))

    return update


@torch.no_grad()
def recompute_batchnorm(model: torch.nn.Module, x: torch.Tensor, batch_size: int, n_batches: int) -> None:
    """Replace every BatchNorm layer's running statistics with their mean over ``n_batches`` clean batches.

    The batches are the first ``n_batches * batch_size`` images of ``x`` (no augmentation); only the
    BatchNorm layers run in training mode (dropout stays off), with a cumulative average
    (momentum None), as ``torch.optim.swa_utils.update_bn`` does for averaged weights.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    model.eval()
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    for start in range(0, min(len(x), n_batches * batch_size), batch_size):
        model(x[start : start + batch_size])
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    model.eval()


@torch.inference_mode()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> Dict[str, float]:
    """Mean cross-entropy and accuracy (percent) over a whole split, in large batches."""
    model.eval()
    loss = torch.zeros((), device=x.device)
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    for start in range(0, len(x), batch_size):
        logits = model(x[start : start + batch_size])
        target = y[start : start + batch_size]
        loss += F.cross_entropy(logits, target, reduction="sum")
        correct += (logits.argmax(1) == target).sum()
    n = max(1, len(x))
    return {"loss": loss.item() / n, "acc": 100.0 * correct.item() / n}


class _ProgressBar:
    """A one-line bar on stderr, redrawn a few dozen times per epoch; silent when not a terminal."""

    def __init__(self, enabled: bool, total: int, label: str):
        self.enabled = enabled and sys.stderr.isatty()
        self.total, self.label = total, label
        self.every = max(1, total // 40)

    def update(self, done: int) -> None:
        if self.enabled and (done % self.every == 0 or done == self.total):
            filled = 30 * done // self.total
            sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {done}/{self.total}")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def train_step(model, opt, schedule, average: Optional[AveragedModel], xb: torch.Tensor, yb: torch.Tensor,
               label_smoothing: float = 0.0):
    """One optimizer step on a batch; the batch's mean loss and its logits, detached.

    ``yb`` of shape (batch, K) trains K fused copies of a net (``mnist_arch.fused``): the logits
    (batch, K * classes) are read as (batch, K, classes), and the loss is the sum of the copies'
    mean cross-entropies, so each copy's gradient is the one its own run would get; the loss
    returned is then one per copy.
    """
    logits = model(xb)
    if yb.dim() == 2:
        logits = logits.view(*yb.shape, -1)
        losses = F.cross_entropy(logits.transpose(1, 2), yb, reduction="none", label_smoothing=label_smoothing).mean(0)
        loss = losses.sum()
    else:
        loss = losses = F.cross_entropy(logits, yb, label_smoothing=label_smoothing)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    schedule.step()
    if average is not None:
        average.update_parameters(model)
    return losses.detach(), logits.detach()


def _train_epoch(model, opt, schedule, data: MnistTensors, cfg: Any, generator: torch.Generator, bar: _ProgressBar,
                 average: Optional[AveragedModel] = None):
    model.train()
    x, y = data.train_x, data.train_y
    n, bs = len(x), cfg.trainer.batch_size
    order = torch.randperm(n, generator=generator, device=generator.device)
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    for step, start in enumerate(range(0, n, bs), 1):
        idx = order[start : start + bs]
        xb, yb = x[idx], y[idx]
        if cfg.data.augment.enabled:
            xb = augment(xb, cfg.data.augment, generator)
        loss, logits = train_step(model, opt, schedule, average, xb, yb, cfg.trainer.label_smoothing)
        loss_sum += loss * len(idx)
        correct += (logits.argmax(-1) == yb).sum()
        bar.update(step)
    bar.close()
    return {"loss": loss_sum.item() / n, "acc": 100.0 * correct.item() / n}


def summarize(history: List[Dict[str, Any]], target_acc: float, last_k: int) -> Dict[str, Any]:
    """Every summary metric of a run, from its per-epoch history: computed here and nowhere else.

    ``min_last_k_*`` is the worst of the last ``last_k`` epochs (the strict "holds" reading);
    the validation figures are there when the history has ``val_acc``.
    """
    accs = [h["test_acc"] for h in history]
    best = max(range(len(accs)), key=lambda i: (accs[i], -i))  # earliest epoch among equals
    reached = next((h["epoch"] for h in history if h["test_acc"] >= target_acc), None)
    out = {
        "best_test_acc": accs[best],
        "final_test_acc": accs[-1],
        "min_last_k_test_acc": min(accs[-last_k:]),
        "best_epoch": history[best]["epoch"],
        "epoch_reached_target": reached,
        "epochs_run": len(history),
        "target_acc": target_acc,
    }
    if "val_acc" in history[0]:  # a validation split: the same figures on it, to select by
        vals = [h["val_acc"] for h in history]
        out.update(best_val_acc=max(vals), final_val_acc=vals[-1], min_last_k_val_acc=min(vals[-last_k:]))
    return out


def fit(cfg: Any, callbacks: Sequence[EpochCallback] = ()) -> Dict[str, Any]:
    """Train the model ``cfg.model`` describes per ``cfg`` and return its metrics.

    The parameter budget is checked before any data is loaded.
    """
    check_config(cfg)
    torch.manual_seed(cfg.seed)  # model init and dropout
    n_params = count_parameters(build_model(cfg.model))
    check_budget(n_params, cfg.budget.max_params)
    device = resolve_device(cfg.trainer.device)
    if cfg.trainer.threads is not None and device.type == "cpu":
        torch.set_num_threads(cfg.trainer.threads)

    started = time.perf_counter()
    data = load_mnist(cfg.data, device)
    epochs = cfg.trainer.epochs
    steps_per_epoch = math.ceil(len(data.train_x) / cfg.trainer.batch_size)
    model, opt, schedule, average, generator = _build_run(cfg, device, steps_per_epoch)
    evaluated = average.module if average is not None else model
    log.info(
        "training %s parameters on %s: %d train / %d val / %d test images, %d epochs of %d steps",
        f"{n_params:,}", device, len(data.train_x), len(data.val_x), len(data.test_x), epochs, steps_per_epoch,
    )

    for callback in callbacks:
        if hasattr(callback, "on_train_start"):
            callback.on_train_start()
    savers = [c for c in callbacks if hasattr(c, "on_checkpoint")]
    with tempfile.TemporaryDirectory(prefix="mnist_arch_checkpoint_") as folder:
        path = Path(folder) / "state.ckpt"
        history: List[Dict[str, Any]] = []
        seconds_before = 0.0  # training time of the run this one resumes
        state = _resumable_state(cfg, device, callbacks, path)
        if state is not None:
            try:
                checkpoint.restore(state, model, opt, schedule, average, generator)
                history, seconds_before = list(state["history"]), float(state["seconds"])
                log.info("resumed from the checkpoint of epoch %d: training from epoch %d", state["epoch"],
                         state["epoch"] + 1)
                for callback in callbacks:
                    if hasattr(callback, "on_resumed"):
                        callback.on_resumed(state["epoch"], history)
            except checkpoint.CheckpointRefused as exc:
                log.warning("the checkpoint of epoch %d is not loaded: %s; training from epoch 1", state["epoch"], exc)
                model, opt, schedule, average, generator = _build_run(cfg, device, steps_per_epoch)
                evaluated = average.module if average is not None else model
        stop_reason = None
        for epoch in range(len(history) + 1, epochs + 1):
            t0 = time.perf_counter()
            lr = opt.param_groups[0]["lr"]
            bar = _ProgressBar(cfg.trainer.progress, steps_per_epoch, f"epoch {epoch}/{epochs}")
            train = _train_epoch(model, opt, schedule, data, cfg, generator, bar, average)
            t1 = time.perf_counter()
            if cfg.trainer.bn_recompute:  # statistics of the weights evaluated, from clean images
                recompute_batchnorm(evaluated, data.train_x, cfg.trainer.batch_size, cfg.trainer.bn_recompute)
            t_bn = time.perf_counter()
            test = evaluate(evaluated, data.test_x, data.test_y, cfg.trainer.eval_batch_size)
            record: Dict[str, Any] = {
                "epoch": epoch,
                "train_loss": train["loss"],
                "train_acc": train["acc"],
                "test_loss": test["loss"],
                "test_acc": test["acc"],
            }
            if len(data.val_x):
                val = evaluate(evaluated, data.val_x, data.val_y, cfg.trainer.eval_batch_size)
                record.update(val_loss=val["loss"], val_acc=val["acc"])
            t2 = time.perf_counter()
            record.update(lr=lr, seconds=t2 - t0, eval_seconds=t2 - t_bn)
            if cfg.trainer.bn_recompute:
                record["bn_seconds"] = t_bn - t1
            history.append(record)
            val_text = f"  val acc {record['val_acc']:.2f}%" if "val_acc" in record else ""
            bn_text = f" (BN stats {record['bn_seconds']:.1f}s)" if "bn_seconds" in record else ""
            log.info(
                "epoch %2d/%d  train loss %.4f acc %.2f%%  test loss %.4f acc %.2f%%%s  lr %.4f  %.1fs%s",
                epoch, epochs, train["loss"], train["acc"], test["loss"], test["acc"], val_text, lr, record["seconds"],
                bn_text,
            )
            if not math.isfinite(train["loss"]):
                stop_reason = "train loss is not finite (diverged)"
            for callback in callbacks:
                if callback.on_epoch_end(epoch, {**record, "epochs": epochs}):
                    stop_reason = stop_reason or f"stopped by {type(callback).__name__} after epoch {epoch}"
            if stop_reason:
                log.info("%s", stop_reason)
                break
            if savers:  # after the reports: a resume never reports an epoch twice
                checkpoint.save(path, cfg, epoch, model, opt, schedule, average, generator, history,
                                seconds_before + time.perf_counter() - started)
                for saver in savers:
                    saver.on_checkpoint(path, epoch)

    summary = summarize(history, cfg.objective.target_acc, cfg.objective.last_k)
    result: Dict[str, Any] = {
        "n_params": n_params,
        "device": str(device),
        **summary,
        "stopped_early": stop_reason is not None,
        "stop_reason": stop_reason,
        "seconds": seconds_before + time.perf_counter() - started,
        "history": history,
        "objective_metric": cfg.objective.metric,
        "objective": summary[cfg.objective.metric],
    }
    for callback in callbacks:
        if hasattr(callback, "on_train_end"):
            callback.on_train_end(result)
    return result


def _build_run(cfg: Any, device: torch.device, steps_per_epoch: int):
    """Model, optimizer, schedule, weight average and generator as epoch 1 starts, from the seed alone."""
    torch.manual_seed(cfg.seed)  # model init and dropout
    model = build_model(cfg.model).to(device)
    if cfg.trainer.channels_last:  # 1-channel inputs are already NHWC; the convs' outputs follow the weights
        model = model.to(memory_format=torch.channels_last)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)  # shuffling and augmentation
    return (model, *training_parts(model, cfg, steps_per_epoch), generator)


def training_parts(model: torch.nn.Module, cfg: Any, steps_per_epoch: int):
    """The optimizer, the schedule and the weight average (None without ``trainer.ema``) that train ``model``.

    The weight average is what gets evaluated: its BatchNorm statistics are averaged with the
    weights (use_buffers), so they match the averaged weights rather than the last step's.
    """
    opt = build_optimizer(model.parameters(), cfg.optim)
    schedule = build_schedule(opt, cfg.schedule, cfg.trainer.epochs, steps_per_epoch)
    average = (AveragedModel(model, multi_avg_fn=ema_decays(cfg.trainer.ema, cfg.trainer.ema_warmup), use_buffers=True)
               if cfg.trainer.ema else None)  # decay 0 would average nothing: the plain model
    return opt, schedule, average


def _resumable_state(cfg: Any, device: torch.device, callbacks: Sequence[Any], path: Path) -> Optional[Dict[str, Any]]:
    """The checkpoint a callback offers to resume from, checked to belong to this run; None to start at epoch 1."""
    for callback in callbacks:
        if hasattr(callback, "resume_from") and callback.resume_from(path):
            try:
                return checkpoint.load(path, cfg, device)
            except checkpoint.CheckpointRefused as exc:
                log.warning("the checkpoint offered to resume from is not loaded: %s; training from epoch 1", exc)
                return None
    return None
