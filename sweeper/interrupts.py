"""Interrupts of a sweep: Ctrl-C (SIGINT) and SIGTERM end it cleanly, and nothing is left half-recorded.

The trial a worker was running is recorded failed with the reason "interrupted" at once (not
left RUNNING for the grace period), and it counts neither toward n_trials nor toward the
failure rate; the worker processes of ``n_jobs`` end with the process that started them.

When the interrupt acts matters. Raised in the middle of a database call, it can leave a
transaction open that the recording of the interrupt then waits on forever (SQLite), or strike
in a finalizer, where Python prints it as "ignored" and goes on. So a signal is noted, and:

- while the job runs (the app's own task function, ``job_running``; with a launcher that runs jobs
  elsewhere, the wait for them), it is raised at once, except inside
  the job's own calls to the sweep database through ``sweeper.api`` (``database_call``): those
  finish first, and it is raised as they return;
- everywhere else (claiming, telling, recording), it is raised at the sweep's next safe point
  (``check_interrupt``: before each claim, each job, each retry of an unreachable database),
  a second or less later.

An interrupt's "ignored" report is not printed: the note acts on it.
"""

import contextlib
import functools
import signal
import sys
from typing import Any, Callable, Iterator, List

INTERRUPTED_ATTR = "interrupted"  # a trial stopped by an interrupt: not its own failure


class Interrupted(BaseException):
    """SIGTERM (or SIGHUP) arrived: raised in the main thread like KeyboardInterrupt for SIGINT."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_noted: List[int] = []  # signals received inside ``interruptible()``
_depth = {"job": 0, "database": 0}  # inside the job; inside one of its database calls


def _exception(signum: int) -> BaseException:
    return KeyboardInterrupt() if signum == signal.SIGINT else Interrupted(signum)


def check_interrupt() -> None:
    """At a safe point: raise the interrupt a signal asked for while it could not act (or its raise was swallowed)."""
    if _noted:
        raise _exception(_noted[-1])


def _acts_at_once() -> bool:
    return _depth["job"] > 0 and _depth["database"] == 0


@contextlib.contextmanager
def job_running() -> Iterator[None]:
    """The job (the app's code) runs: an interrupt stops it at once; one noted before it starts stops it before."""
    check_interrupt()
    _depth["job"] += 1
    try:
        yield
    finally:
        _depth["job"] -= 1


def interruptible_task(task_function: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """The app's task function, run as the job: an interrupt stops it at once (``job_running``)."""

    @functools.wraps(task_function)
    def task(cfg: Any) -> Any:
        with job_running():
            return task_function(cfg)

    return task


@contextlib.contextmanager
def database_call() -> Iterator[None]:
    """A call to the sweep database from inside the job: an interrupt waits until it returns."""
    _depth["database"] += 1
    try:
        yield
    finally:
        _depth["database"] -= 1
    if _acts_at_once():
        check_interrupt()


def exit_code(exc: BaseException) -> int:
    """What a shell reports for a process ended by this signal: 128 + its number."""
    return 128 + (exc.signum if isinstance(exc, Interrupted) else signal.SIGINT)


@contextlib.contextmanager
def interruptible(takes_sigint: bool = True) -> Iterator[None]:
    """While the block runs, SIGTERM and SIGHUP raise Interrupted and SIGINT KeyboardInterrupt, each noted too.

    SIGINT is taken even where the process inherited it ignored (a background job of a script: an
    explicit ``kill -INT`` still means stop), except in a worker of n_jobs (``takes_sigint=False``),
    which leaves it to the process the user started. SIGHUP ignored on entry (``nohup``) stays ignored.
    """

    def raise_interrupted(signum, frame):
        _noted.append(signum)
        if _acts_at_once():
            raise _exception(signum)

    def quiet_if_noted(unraisable) -> None:
        if _noted and isinstance(unraisable.exc_value, (KeyboardInterrupt, Interrupted)):
            return  # check_interrupt acts on it at the next safe point
        previous_hook(unraisable)

    previous = {}
    _noted.clear()
    try:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            if signum == signal.SIGINT and not takes_sigint:
                continue  # a worker of n_jobs: the process the user started takes Ctrl-C (workers.py)
            if signum == signal.SIGHUP and signal.getsignal(signum) is signal.SIG_IGN:
                continue  # nohup: the user asked the sweep to outlive the terminal
            previous[signum] = signal.signal(signum, raise_interrupted)
    except ValueError:  # not the main thread: signals cannot be handled here
        pass
    previous_hook, sys.unraisablehook = sys.unraisablehook, quiet_if_noted
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        sys.unraisablehook = previous_hook
        _noted.clear()  # acted on, or the sweep ended first: nothing outside a sweep raises for it


@contextlib.contextmanager
def interrupts_ignored() -> Iterator[None]:
    """Inside, the process ignores SIGINT, SIGTERM and SIGHUP: it is recording an interrupt and exiting,
    which a second signal (Ctrl-C twice, SIGTERM after it) must not cut short. After, the handlers it had
    come back: a program that ran the sweep in its own process keeps its Ctrl-C, and what it starts
    later does not inherit SIGTERM ignored."""
    previous = {}
    try:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            previous[signum] = signal.signal(signum, signal.SIG_IGN)
    except ValueError:  # not the main thread
        pass
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
