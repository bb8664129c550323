"""Optimizer and learning-rate schedule from the ``optim`` and ``schedule`` config nodes.

Every schedule is stepped once per batch, so one training loop serves them all.
"""

import math
from typing import Any, Iterable, List

import torch
from torch.optim import lr_scheduler

from .errors import ConfigError, lookup


def _sgd(params: Iterable[torch.nn.Parameter], cfg: Any) -> torch.optim.Optimizer:
    if cfg.nesterov and cfg.momentum <= 0:
        raise ConfigError(f"optim.nesterov=true needs optim.momentum > 0 (got {cfg.momentum})")
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)


def _adam(params: Iterable[torch.nn.Parameter], cfg: Any) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def _adamw(params: Iterable[torch.nn.Parameter], cfg: Any) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


OPTIMIZERS = {"sgd": _sgd, "adam": _adam, "adamw": _adamw}


def check_optim(cfg: Any) -> None:
    """The optimizer's values, before any data is loaded: a bad one is one ConfigError naming it."""
    lookup(OPTIMIZERS, cfg.name, "optim.name")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise ConfigError(f"optim.lr={cfg.lr} must be a finite number > 0")
    if not (cfg.weight_decay >= 0 and math.isfinite(cfg.weight_decay)):
        raise ConfigError(f"optim.weight_decay={cfg.weight_decay} must be a finite number >= 0")
    if cfg.name == "sgd" and not 0 <= cfg.momentum < 1:
        raise ConfigError(f"optim.momentum={cfg.momentum} must be in [0, 1)")
    if cfg.name in ("adam", "adamw") and not all(0 <= b < 1 for b in cfg.betas):
        raise ConfigError(f"optim.betas={list(cfg.betas)} must each be in [0, 1)")


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: Any) -> torch.optim.Optimizer:
    check_optim(cfg)
    return OPTIMIZERS[cfg.name](params, cfg)


def _onecycle(opt: torch.optim.Optimizer, cfg: Any, total_steps: int, steps_per_epoch: int) -> lr_scheduler.LRScheduler:
    if not 0 < cfg.pct_start < 1:
        raise ConfigError(f"schedule.pct_start={cfg.pct_start} must be in (0, 1)")
    return lr_scheduler.OneCycleLR(
        opt,
        max_lr=[g["lr"] for g in opt.param_groups],
        total_steps=total_steps,
        pct_start=cfg.pct_start,
        div_factor=cfg.div_factor,
        final_div_factor=cfg.final_div_factor,
    )


def _step(opt: torch.optim.Optimizer, cfg: Any, total_steps: int, steps_per_epoch: int) -> lr_scheduler.LRScheduler:
    if cfg.step_size < 1:
        raise ConfigError(f"schedule.step_size={cfg.step_size} must be >= 1 (epochs)")
    period = cfg.step_size * steps_per_epoch
    gamma = cfg.gamma
    return lr_scheduler.LambdaLR(opt, lambda step: gamma ** (step // period))


def _cosine(opt: torch.optim.Optimizer, cfg: Any, total_steps: int, steps_per_epoch: int) -> lr_scheduler.LRScheduler:
    return lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps, eta_min=cfg.eta_min)


def _constant(opt: torch.optim.Optimizer, cfg: Any, total_steps: int, steps_per_epoch: int) -> lr_scheduler.LRScheduler:
    return lr_scheduler.LambdaLR(opt, lambda step: 1.0)


SCHEDULES = {"onecycle": _onecycle, "step": _step, "cosine": _cosine, "none": _constant}


class AnnealedEnd:
    """Any schedule with its rate ramped linearly to zero over the last ``anneal_steps`` steps.

    The inner schedule keeps its own rates: before each of its steps the groups get back the rate
    it set (cosine's recursive form reads them), and the ramp multiplies what it sets next. Step
    ``s`` (0-based) trains at ``min(1, (total - s) / anneal_steps)`` of the inner rate, so the last
    step trains at ``1 / anneal_steps`` of it: near zero, never exactly (that step would be wasted).
    """

    def __init__(self, inner: lr_scheduler.LRScheduler, total_steps: int, anneal_steps: int):
        self.inner, self.total, self.anneal = inner, total_steps, anneal_steps
        self.optimizer = inner.optimizer
        self.steps = 0
        self._apply()

    def factor(self, step: int) -> float:
        return min(1.0, max(0, self.total - step) / self.anneal)

    def _apply(self) -> None:
        f = self.factor(self.steps)
        for group, lr in zip(self.optimizer.param_groups, self.inner.get_last_lr()):
            group["lr"] = lr * f

    def step(self) -> None:
        for group, lr in zip(self.optimizer.param_groups, self.inner.get_last_lr()):
            group["lr"] = lr
        self.inner.step()
        self.steps += 1
        self._apply()

    def get_last_lr(self) -> List[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        """For a checkpoint: the inner schedule's state and the steps taken (the rates are the optimizer's)."""
        return {"steps": self.steps, "inner": self.inner.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state["inner"])
        self.steps = state["steps"]


def check_schedule(cfg: Any, epochs: int) -> None:
    """The schedule's values that need the epoch count, before any data is loaded."""
    lookup(SCHEDULES, cfg.name, "schedule.name")
    if not 0 <= cfg.anneal_epochs <= epochs:
        raise ConfigError(f"schedule.anneal_epochs={cfg.anneal_epochs} must be between 0 and trainer.epochs={epochs}")


def build_schedule(opt: torch.optim.Optimizer, cfg: Any, epochs: int, steps_per_epoch: int):
    """The schedule ``cfg`` names, stepped once per batch; with ``anneal_epochs`` its end ramped to zero."""
    make = lookup(SCHEDULES, cfg.name, "schedule.name")
    check_schedule(cfg, epochs)
    total = epochs * steps_per_epoch
    schedule = make(opt, cfg, total, steps_per_epoch)
    return AnnealedEnd(schedule, total, cfg.anneal_epochs * steps_per_epoch) if cfg.anneal_epochs else schedule
