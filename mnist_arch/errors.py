"""Errors a user can cause. Each message is one line that names the bad value and what is allowed.

The command-line entry points print these as one line and exit non-zero (no traceback unless
``HYDRA_FULL_ERROR=1``); library callers get ordinary exceptions.
Hydra prints a ``CompactHydraException`` as its message alone, so deriving from it is what
makes a user error one line on the command line.
"""

from hydra.errors import CompactHydraException


class UserError(CompactHydraException):
    """Base of the errors caused by input (config, data, environment) rather than by a bug."""


class ConfigError(UserError, ValueError):
    """A config value is invalid: unknown name, out of range, or an architecture that cannot be built."""


class OverBudgetError(ConfigError):
    """The model has more parameters than ``budget.max_params``."""

    def __init__(self, n_params: int, max_params: int):
        self.n_params = n_params
        self.max_params = max_params
        super().__init__(
            f"model has {n_params:,} parameters, over budget.max_params={max_params:,}; "
            "shrink the model (e.g. model.widths.multiplier) or set budget.max_params=null"
        )


class DataUnavailableError(UserError, RuntimeError):
    """MNIST could not be found, fetched or verified."""
