"""Errors a sweep's user can cause, and how the sweeper's commands print them: one line each."""

import sys
from typing import NoReturn

from hydra.errors import CompactHydraException, InstantiationException
from omegaconf.errors import OmegaConfBaseException


class SweepError(CompactHydraException):
    """A sweep cannot go on: bad sweeper config, over-budget space, too many failures.

    Hydra prints a CompactHydraException as its message alone: one line, no traceback.
    """


def squashed(what: object, limit: int = 0) -> str:
    """``str(what)`` on one line (runs of white space folded), cut to ``limit`` characters when given."""
    text = " ".join(str(what).split())
    return text[:limit] if limit else text


def one_line(exc: BaseException) -> str:
    """An error as one line: Hydra's and OmegaConf's multi-line messages folded, noise dropped."""
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
    return "; ".join(folded) or type(exc).__name__


def fail(prog: str, message: str) -> NoReturn:
    sys.stderr.write(f"{prog}: {message}\n")
    sys.exit(1)
