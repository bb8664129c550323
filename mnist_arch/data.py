"""Real MNIST as tensors on the training device, and the batched augmentation the trainer uses.

The files come from ``fetch.py`` (found, fetched and verified against the published MD5 sums);
here they are read once per process, normalised, split, and kept on the device.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F

from .errors import ConfigError
from .fetch import default_root, ensure_mnist

# Pixel statistics of the 60k training images after /255.
MEAN, STD = 0.1307, 0.3081


@dataclass
class MnistTensors:
    """The dataset as tensors on one device, normalised once: images (N, 1, 28, 28) float, labels (N,) long."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


VAL_SPLIT_SEED = 20240601  # fixed, so the validation split is the same whatever the training seed


def _normalise(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    return ((images.to(device=device, dtype=torch.float32) / 255.0 - MEAN) / STD).unsqueeze(1)


def _subset(n: Optional[int], total: int, key: str) -> int:
    if n is None:
        return total
    if not 1 <= n <= total:
        raise ConfigError(f"{key}={n} must be between 1 and {total}, or null for all")
    return n


# The last dataset loaded in this process, by what determines it: a sweep worker runs trial after
# trial in one process, and each would otherwise re-read and re-verify 55 MB of files. The
# trainer never writes to these tensors.
_LAST_LOADED: Dict[tuple, MnistTensors] = {}


def load_mnist(cfg: Any, device: torch.device = torch.device("cpu")) -> MnistTensors:
    """Load MNIST (fetching it if needed) onto ``device`` per a ``data`` config node."""
    root = Path(cfg.root).expanduser() if cfg.root else default_root()
    key = (str(root), cfg.train_subset, cfg.test_subset, cfg.val_size, str(device))
    if key not in _LAST_LOADED:
        tensors = _load(root, cfg, device)
        _LAST_LOADED.clear()
        _LAST_LOADED[key] = tensors
    return _LAST_LOADED[key]


def _load(root: Path, cfg: Any, device: torch.device) -> MnistTensors:
    from torchvision.datasets import MNIST

    root = ensure_mnist(root)
    train = MNIST(str(root), train=True, download=False)
    test = MNIST(str(root), train=False, download=False)
    n_train = _subset(cfg.train_subset, len(train.targets), "data.train_subset")
    n_test = _subset(cfg.test_subset, len(test.targets), "data.test_subset")
    train_x, train_y = train.data[:n_train], train.targets[:n_train]
    if not 0 <= cfg.val_size < n_train:
        raise ConfigError(f"data.val_size={cfg.val_size} must be >= 0 and below the {n_train} training images")
    order = torch.randperm(n_train, generator=torch.Generator().manual_seed(VAL_SPLIT_SEED))
    train_idx, val_idx = order[: n_train - cfg.val_size].sort().values, order[n_train - cfg.val_size :].sort().values
    return MnistTensors(
        train_x=_normalise(train_x[train_idx], device),
        train_y=train_y[train_idx].to(device),
        val_x=_normalise(train_x[val_idx], device),
        val_y=train_y[val_idx].to(device),
        test_x=_normalise(test.data[:n_test], device),
        test_y=test.targets[:n_test].to(device),
    )


def augment(images: torch.Tensor, cfg: Any, generator: torch.Generator) -> torch.Tensor:
    """Random rotation, shift, zoom and (where configured) shear of a batch, in one batched ``grid_sample``
    on the batch's device, then (where configured) brightness and contrast per image.

    Reproducible from ``generator``. Border padding repeats MNIST's empty background.
    """
    n = images.shape[0]
    u = torch.rand(n, 4, generator=generator, device=images.device) * 2 - 1  # uniform in [-1, 1)
    angle = torch.deg2rad(u[:, 0] * cfg.rotation)
    zoom = 1 + u[:, 1] * cfg.scale
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    shift = u[:, 2:] * (2 * cfg.translate)  # grid coordinates span [-1, 1], so a side is 2
    # theta maps output to input coordinates: (rotation / zoom) after a shear x -> x + tan(s) * y
    shear = cfg.get("shear", 0.0)  # absent from configs recorded before it existed
    tan = torch.zeros_like(cos)
    if shear:  # drawn only where set, so runs without it keep their random stream
        tan = torch.tan(torch.deg2rad((torch.rand(n, generator=generator, device=images.device) * 2 - 1) * shear))
    theta = torch.stack(
        [torch.stack([cos, cos * tan - sin, shift[:, 0]], dim=1), torch.stack([sin, sin * tan + cos, shift[:, 1]], dim=1)],
        dim=1,
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if cfg.brightness or cfg.contrast:  # drawn after the geometry, so runs without them keep their random stream
        v = torch.rand(n, 2, 1, 1, 1, generator=generator, device=images.device) * 2 - 1
        raw = out * STD + MEAN  # pixel values in [0, 1]
        raw = raw * (1 + v[:, 1] * cfg.contrast) + v[:, 0] * cfg.brightness
        out = (raw - MEAN) / STD
    return out
