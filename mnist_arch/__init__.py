"""The training job: MNIST as tensors, a config-built CNN, a plain training loop.

Knows PyTorch, torchvision, OmegaConf and Hydra's entry point; never Optuna or the sweeper.
The few functions the rest of the project uses:
"""

import os

# CPU threads that wait for work sleep instead of spinning (OpenMP reads this once, as torch loads).
# On cores that other work also uses, spinning threads take turns from the ones with work. One epoch of
# 6,000 images on 2 threads (2-core machine): 39-59 s spinning, 12 s sleeping, with a sweep's other
# processes on the cores; 6.1 s spinning, 7.1 s sleeping, with the cores free. Sleeping costs little
# where the cores are free and saves most where they are not; set OMP_WAIT_POLICY=ACTIVE to spin.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
