"""Errors a sweep's user can cause, and how they reach the user of any Hydra app: one line each."""

import dataclasses
import difflib
import os
import re
import sys
from typing import Any, Callable, List, NoReturn, Optional

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


# ------------------------------------------------------------------ the sweeper's errors, in any Hydra app

UNKNOWN_KEY = re.compile(r"Key '(?P<key>[^']+)' not in '(?P<schema>\w+)'")
FULL_KEY = re.compile(r"full_key: (?P<full>\S+)")
UNEXPECTED_ARGUMENT = re.compile(r"unexpected keyword argument '(?P<key>[^']+)'")


def _chain(exc: Optional[BaseException]) -> List[BaseException]:
    seen: List[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def no_such_key(full_key: str, valid: List[str]) -> str:
    """``full_key`` is not a setting: the nearest valid one, else all of them."""
    parent, _, key = full_key.rpartition(".")
    valid = [v for v in valid if not v.startswith("_") and v != "defaults"]
    near = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    hint = f"did you mean {parent}.{near[0]}?" if near else f"the settings of {parent}: {', '.join(valid)}"
    return f"{full_key}: no such setting; {hint}"


def sweeper_error_line(exc: BaseException) -> Optional[str]:
    """The one line for an error of the sweeper or of its config (a misspelt ``hydra.sweeper`` key); None otherwise.

    Hydra wraps these on their way to the user: a SweepError raised while it instantiates the sweeper
    arrives inside an InstantiationException (target, repr, ``full_key``); a misspelt key fails the
    composition with OmegaConf's four lines, naming the sweeper's schema class.
    """
    from . import config as schemas  # the dataclasses the sweeper's keys are checked against

    chain = _chain(exc)
    for e in chain:
        if isinstance(e, SweepError):
            return one_line(e)
    text = "\n".join(str(e) for e in chain)
    unknown = UNKNOWN_KEY.search(text)
    if unknown:
        schema = getattr(schemas, unknown["schema"], None)
        if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
            return None  # another config's key: not the sweeper's to report
        full = FULL_KEY.search(text)
        full_key = full["full"] if full else f"hydra.sweeper.{unknown['key']}"
        return no_such_key(full_key, [f.name for f in dataclasses.fields(schema)])
    argument = UNEXPECTED_ARGUMENT.search(text)
    if argument and schemas.SWEEPER_TARGET in text:  # +hydra.sweeper.<typo>=... reached the constructor
        return no_such_key(f"hydra.sweeper.{argument['key']}",
                           [f.name for f in dataclasses.fields(schemas.OptunaBudgetSweeperConf)])
    full = FULL_KEY.search(text)
    if full and full["full"].startswith("hydra.sweeper"):  # a bad value of one of its keys (type, merge)
        return one_line(exc)
    if "'hydra/sweeper/" in text or "override 'hydra.sweeper." in text:  # hydra/sweeper/sampler=nsga; a bad override
        return one_line(exc)
    return None


def report_sweeper_errors_in_one_line() -> None:
    """From now on this process's Hydra app prints the sweeper's errors as ``Error: <one line>`` (exit 1).

    Hydra offers no public hook for how ``@hydra.main`` reports an error, and prints a
    CompactHydraException with a second paragraph (the HYDRA_FULL_ERROR hint), wrapped ones with
    their repr and ``full_key``. So the one function it reports through is wrapped: errors of the
    sweeper (``sweeper_error_line``) print as one line, everything else goes to Hydra's report (or
    whatever the app put there) unchanged; ``HYDRA_FULL_ERROR=1`` shows the traceback as always.
    Idempotent; the plugin's shim calls it as every Hydra app starts.
    """
    import hydra._internal.utils as hydra_internal

    current: Optional[Callable[[Any], Any]] = getattr(hydra_internal, "run_and_report", None)
    if current is None or getattr(current, "reports_sweeper_errors", False):
        return

    def run_and_report(func: Callable[[], Any]) -> Any:
        try:
            return func()
        except Exception as exc:
            line = None if os.environ.get("HYDRA_FULL_ERROR") == "1" else sweeper_error_line(exc)
            if line is None:  # not the sweeper's: the report it would have had (names it, so the closure keeps it)
                error = exc

                def reraise() -> Any:
                    raise error

                return current(reraise)
            sys.stderr.write(f"{line}\n" if line.startswith("Error") else f"Error: {line}\n")
            sys.exit(1)

    run_and_report.reports_sweeper_errors = True  # type: ignore[attr-defined]
    hydra_internal.run_and_report = run_and_report
