"""The training job: MNIST as tensors, a config-built CNN, a plain training loop.

Knows PyTorch, torchvision, OmegaConf and Hydra's entry point; never Optuna or the sweeper.
The few functions the rest of the project uses:
"""

try:
    import torch  # noqa: F401
    import torchvision  # noqa: F401
except ImportError as exc:  # the sweeper alone was installed (pip install .): the app is an extra
    raise ImportError(f"mnist_arch needs torch and torchvision ({exc}): pip install -e '.[mnist]' in this repo, "
                      "or pip install 'mnist-arch-sweep[mnist]'") from None

from .data import load_mnist
from .model import build_model, count_parameters
from .trainer import fit

__all__ = ["load_mnist", "build_model", "count_parameters", "fit"]
