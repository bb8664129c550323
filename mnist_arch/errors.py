"""Errors a user can cause. Each message is one line that names the bad value and what is allowed.

The command-line entry points print these as one line and exit non-zero (no traceback unless
``HYDRA_FULL_ERROR=1``); library callers get ordinary exceptions.
Hydra prints a ``CompactHydraException`` as its message alone, so deriving from it is what
makes a user error one line on the command line.
"""

import os
import sys
from typing import Any, Callable, Mapping

from hydra.errors import CompactHydraException, HydraException
from omegaconf.errors import OmegaConfBaseException

from sweeper.errors import one_line, squashed  # noqa: F401  (squashed: the app's modules take it from here)


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


def lookup(table: Mapping[str, Any], name: str, key: str) -> Any:
    """``table[name]``, or a ConfigError naming the config key, the bad value and the valid ones."""
    if name not in table:
        raise ConfigError(f"{key}={name!r} is not one of: {', '.join(table)}")
    return table[name]


USER_ERRORS = (HydraException, OmegaConfBaseException)  # ConfigError and the rest derive from these


def report_in_one_line(prefix: str, func: Callable[[], Any]) -> Any:
    """``func()``; an error a user caused prints as ``<prefix><one line>`` on stderr and exits 1.

    What every command of the app does with user errors. HYDRA_FULL_ERROR=1 shows the
    traceback instead; other exceptions (bugs) propagate untouched.
    """
    try:
        return func()
    except USER_ERRORS as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        sys.stderr.write(f"{prefix}{one_line(exc)}\n")
        sys.exit(1)
