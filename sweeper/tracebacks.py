"""A failing job's traceback, kept: written to ``error.log`` in the job's folder, its tail stored on the trial.

Hydra's ``run_job`` catches what the app's task function raises and hands the sweeper the exception
alone, and its job log stays empty; a traceback does not survive a launcher that runs the job in
another process (pickling drops it). So the task function itself is wrapped (``KeepTraceback``, for
every launcher): where the job fails, the whole traceback is written next to the job's outputs and
carried on the exception (``TRACEBACK_ATTR``), which is what reaches the sweeper from any launcher.
"""

import contextlib
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

import optuna

from .interrupts import Interrupted

ERROR_LOG = "error.log"
TRACEBACK_LINES = 15  # how much of a traceback is stored on the trial (the file has all of it)
# what the wrapper leaves on the exception, and the trial's user attributes (trials.SWEEPER_ATTRS)
TEXT_ATTR, PATH_ATTR = "_sweeper_traceback", "_sweeper_error_log"
TRACEBACK_ATTR, ERROR_LOG_ATTR = "traceback", "error_log"


def _not_a_failure(exc: BaseException) -> bool:
    """A pruned trial or an interrupt ends the job, but it is not the job's error."""
    return isinstance(exc, (optuna.TrialPruned, KeyboardInterrupt, SystemExit, Interrupted))


def _output_dir() -> Optional[Path]:
    from hydra.core.hydra_config import HydraConfig

    with contextlib.suppress(Exception):  # no Hydra job around (a test calling the task directly)
        return Path(HydraConfig.get().runtime.output_dir)
    return None


class KeepTraceback:
    """The app's task function; where it raises, its traceback goes to ``error.log`` and onto the exception.

    A class, not a closure, so launchers that pickle the task function (submitit, joblib) can ship it.
    """

    def __init__(self, task_function: Callable[[Any], Any]):
        self.task_function = task_function
        self.__module__ = getattr(task_function, "__module__", __name__)
        self.__name__ = getattr(task_function, "__name__", "task")
        self.__qualname__ = getattr(task_function, "__qualname__", self.__name__)

    def __call__(self, cfg: Any) -> Any:
        try:
            return self.task_function(cfg)
        except BaseException as exc:
            if not _not_a_failure(exc):
                keep(exc, exc.__traceback__.tb_next if exc.__traceback__ else None)
            raise


def keep(exc: BaseException, tb: Any) -> None:
    """Write ``exc``'s traceback (from frame ``tb`` on: the app's frames) to the job's error.log; note both on it."""
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    path = None
    folder = _output_dir()
    if folder is not None:
        with contextlib.suppress(OSError):  # an unwritable folder: the trial still gets the text
            folder.mkdir(parents=True, exist_ok=True)
            (folder / ERROR_LOG).write_text(text)
            path = str(folder / ERROR_LOG)
    with contextlib.suppress(AttributeError, TypeError):  # an exception type that takes no attributes
        setattr(exc, TEXT_ATTR, text)
        setattr(exc, PATH_ATTR, path)


def kept(exc: BaseException) -> tuple:
    """(whole traceback or None, error.log path or None) the job's wrapper left on ``exc``."""
    return getattr(exc, TEXT_ATTR, None), getattr(exc, PATH_ATTR, None)


def tail(text: str, lines: int = TRACEBACK_LINES) -> str:
    """The last ``lines`` lines of a traceback: the app's innermost frames and the error."""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])
