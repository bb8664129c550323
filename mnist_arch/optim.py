"""Optimizer and learning-rate schedule from the ``optim`` and ``schedule`` config nodes.

Every schedule is stepped once per batch, so one training loop serves them all.
"""

import math
from typing import Any, Iterable

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


def build_schedule(opt: torch.optim.Optimizer, cfg: Any, epochs: int, steps_per_epoch: int) -> lr_scheduler.LRScheduler:
    make = lookup(SCHEDULES, cfg.name, "schedule.name")
    return make(opt, cfg, epochs * steps_per_epoch, steps_per_epoch)
