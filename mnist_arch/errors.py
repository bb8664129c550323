"""Errors a user can cause. Each message is one line that names the bad value and what is allowed.

The command-line entry points print these as one line and exit non-zero (no traceback unless
``HYDRA_FULL_ERROR=1``); library callers get ordinary exceptions.
Hydra prints a ``CompactHydraException`` as its message alone, so deriving from it is what
makes a user error one line on the command line.
"""

import os
import sys
from typing import Any, Callable, Mapping

from hydra.errors import CompactHydraException, HydraException, InstantiationException
from omegaconf.errors import OmegaConfBaseException


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


def squashed(what: object, limit: int = 0) -> str:
    """``str(what)`` on one line (runs of white space folded), cut to ``limit`` characters when given."""
    text = " ".join(str(what).split())
    return text[:limit] if limit else text


def one_line(exc: BaseException) -> str:
    """A user error as one line: Hydra's and OmegaConf's multi-line messages folded, noise dropped."""
    if isinstance(exc, InstantiationException) and isinstance(exc.__cause__, CompactHydraException):
        exc = exc.__cause__  # e.g. a SweepError raised while Hydra instantiated the sweeper
    text = str(exc).split("Config search path:")[0].split("See https://hydra.cc")[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(("full_key:", "reference_type=", "object_type="))]
    cause = exc.__cause__
    if isinstance(cause, OmegaConfBaseException):
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
        if first and first not in lines:
            lines.append(first)
    folded: list = []
    for line in lines:  # "Available options in 'model':" + one option per line -> one clause
        if folded and folded[-1].endswith(":"):
            folded[-1] += " " + line
        elif folded and " " not in line and folded[-1].split(":")[0].startswith("Available options"):
            folded[-1] += ", " + line
        else:
            folded.append(line)
    return "; ".join(folded)


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
