"""Interrupts of a sweep: Ctrl-C (SIGINT) and SIGTERM end it cleanly, and nothing is left half-recorded.

The trial a worker was running is recorded failed with the reason "interrupted" at once (not
left RUNNING for the grace period), and it counts neither toward n_trials nor toward the
failure rate; the worker processes of ``n_jobs`` end with the process that started them.
"""

import contextlib
import signal
from typing import Iterator

INTERRUPTED_ATTR = "interrupted"  # a trial stopped by an interrupt: not its own failure


class Interrupted(BaseException):
    """SIGTERM (or SIGHUP) arrived: raised in the main thread like KeyboardInterrupt for SIGINT."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_code(exc: BaseException) -> int:
    """What a shell reports for a process ended by this signal: 128 + its number."""
    return 128 + (exc.signum if isinstance(exc, Interrupted) else signal.SIGINT)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """While the block runs, SIGTERM and SIGHUP raise Interrupted (SIGINT raises KeyboardInterrupt as always)."""

    def raise_interrupted(signum, frame):
        raise Interrupted(signum)

    previous = {}
    try:
        for signum in (signal.SIGTERM, signal.SIGHUP):
            previous[signum] = signal.signal(signum, raise_interrupted)
    except ValueError:  # not the main thread: signals cannot be handled here
        pass
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def ignore_interrupts() -> None:
    """From now on this process ignores SIGINT, SIGTERM and SIGHUP: it is recording an interrupt and exiting."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        try:
            signal.signal(signum, signal.SIG_IGN)
        except ValueError:  # not the main thread
            return
