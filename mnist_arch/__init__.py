"""The training job: MNIST as tensors, a config-built CNN, a plain training loop.

Knows PyTorch, torchvision, OmegaConf and Hydra's entry point; never Optuna or the sweeper.
The few functions the rest of the project uses:
"""

from .data import load_mnist
from .model import build_model, count_parameters
from .trainer import fit

__all__ = ["load_mnist", "build_model", "count_parameters", "fit"]
