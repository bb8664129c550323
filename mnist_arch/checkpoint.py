"""A training run's full state after an epoch, saved and restored, so a stopped run goes on bit for bit.

What is saved: the model, the optimizer, the LR schedule, the weight average (EMA), every random
stream that shapes training (torch's global one: initialisation and dropout; the run's generator:
batch order and augmentation; CUDA's, numpy's and Python's), the per-epoch history, and the config
that made them. A run restored from epoch ``k`` on the same device and thread count trains epochs
``k+1...`` exactly as the uninterrupted run did (tests compare every figure with ``==``).

A checkpoint is loaded only into the run it belongs to: the same config, except for what does not
change training (progress bar, threads, callbacks, tracking). One that differs or cannot be read
is refused with one line saying why (``CheckpointRefused``); the run then starts from epoch 1.
"""

import io
import os
import random
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from omegaconf import OmegaConf

FORMAT = 1  # bumped when what is saved changes: an older checkpoint is refused, not misread
# keys that do not change what training computes: a resumed run may set them otherwise
NOT_TRAINING = ("trainer.progress", "trainer.threads", "trainer.callbacks", "tracking")


class CheckpointRefused(Exception):
    """The checkpoint does not belong to this run, or cannot be read; the message says why, in one line."""


def run_config(cfg: Any) -> Dict[str, Any]:
    """The config as a checkpoint records it: resolved, without the keys that do not change training."""
    flat = _flatten(OmegaConf.to_container(cfg, resolve=True))
    return {k: v for k, v in flat.items() if not any(k == n or k.startswith(n + ".") for n in NOT_TRAINING)}


def _flatten(node: Any, prefix: str = "") -> Dict[str, Any]:
    if isinstance(node, dict):
        out: Dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: node}


def differences(saved: Dict[str, Any], now: Dict[str, Any], limit: int = 3) -> str:
    """The keys whose values differ, as ``key (saved -> now)``, at most ``limit`` of them; "" when none."""
    shown = lambda d, k: repr(d[k]) if k in d else "unset"
    keys = sorted(k for k in saved.keys() | now.keys() if k not in saved or k not in now or saved[k] != now[k])
    listed = [f"{k} ({shown(saved, k)} -> {shown(now, k)})" for k in keys[:limit]]
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(listed) + more


def random_state(generator: torch.Generator) -> Dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "generator": generator.get_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_random_state(state: Dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: Path, cfg: Any, epoch: int, model: torch.nn.Module, opt: torch.optim.Optimizer, schedule: Any,
         average: Optional[torch.nn.Module], generator: torch.Generator, history: List[Dict[str, Any]],
         seconds: float) -> None:
    """Write the run's state after ``epoch`` to ``path`` (a temporary file, then a rename)."""
    state = {
        "format": FORMAT,
        "config": run_config(cfg),
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "schedule": schedule.state_dict(),
        "average": average.state_dict() if average is not None else None,
        "random": random_state(generator),
        "history": history,
        "seconds": seconds,
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    part = path.with_name(f".{path.name}.part")
    part.write_bytes(buffer.getvalue())
    os.replace(part, path)


def load(path: Path, cfg: Any, device: torch.device) -> Dict[str, Any]:
    """The state saved at ``path``, checked to belong to the run ``cfg`` describes; CheckpointRefused if not."""
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except Exception as exc:
        raise CheckpointRefused(f"it cannot be read ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointRefused(f"it is not a checkpoint of this trainer (format {found!r}, expected {FORMAT})")
    changed = differences(state["config"], run_config(cfg))
    if changed:
        raise CheckpointRefused(f"it belongs to another config: {changed}")
    return state


def restore(state: Dict[str, Any], model: torch.nn.Module, opt: torch.optim.Optimizer, schedule: Any,
            average: Optional[torch.nn.Module], generator: torch.Generator) -> None:
    """Put a loaded state into the run's objects (built as for epoch 1). CheckpointRefused where they do not fit."""
    try:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        if average is not None:
            average.load_state_dict(state["average"])
        set_random_state(state["random"], generator)
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise CheckpointRefused(f"it does not fit this run ({type(exc).__name__}: "
                                f"{' '.join(str(exc).split())[:160]})") from None
