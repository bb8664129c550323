import logging
import os
import sys

import pytest

# Before anything loads torch (mnist_arch sets the same where it is imported first), and for every
# subprocess the tests start: on cores that other work also uses, torch's spinning OpenMP threads made
# each training several times slower (mnist_arch/__init__.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def pytest_configure(config):
    """Under mutmut (``mutmut run``, docs/tests.md): while it records which tests reach which function
    ("stats"), a subprocess could record nothing, and the mutated code's trampoline would look for
    mutmut's settings in the subprocess's working directory. So subprocesses then run the mutated
    tree's own code; while a mutant is tested they inherit it (``MUTANT_UNDER_TEST``), and
    ``PYTHONPATH`` (tests/support.py) makes them import the mutated tree, not the installed one."""
    if os.environ.get("MUTANT_UNDER_TEST") in ("stats", "list_all_tests"):
        os.environ.pop("MUTANT_UNDER_TEST")  # this process keeps mutmut's own copy of it


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow (real training, subprocesses)")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config, items):
    share_fixtures_on_one_worker(items)
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def share_fixtures_on_one_worker(items):
    """Under pytest-xdist (``-n N --dist loadgroup``, README): the tests that share a module- or
    session-scoped fixture run on one worker, so each such fixture (a README example run once, a
    PostgreSQL server) is built once, not once per worker."""
    for item in items:
        defs = getattr(item, "_fixtureinfo", None)
        for name in item.fixturenames:
            fixturedef = (defs.name2fixturedefs.get(name) or [None])[-1] if defs else None
            ours = fixturedef is not None and fixturedef.func.__module__.split(".")[0] == __name__.split(".")[0]
            if ours and fixturedef.scope in ("module", "session"):
                group = item.module.__name__ if fixturedef.scope == "module" else name
                item.add_marker(pytest.mark.xdist_group(group))
                break


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL server on loopback for the session; skipped only where it cannot start.

    In CI (CI set in the environment) a server that cannot start fails the tests instead.
    """
    import os
    import subprocess

    from .pg_server import ServerUnavailable, start

    try:
        server = start()
    except (ServerUnavailable, OSError, subprocess.TimeoutExpired) as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL could not start in CI: {exc}")
        pytest.skip(f"PostgreSQL could not start here: {exc}")
    yield server
    server.remove()


@pytest.fixture(autouse=True)
def no_sweep_worker_runs_the_test_runner(monkeypatch):
    """A sweep run in this process that starts workers (``n_jobs`` > 1, or a mutant's mistake) runs this
    process's command again (``sys.orig_argv``, sweeper.workers): here, pytest's or mutmut's own, and each
    worker would run the suite again, and start workers of its own. In a test the command is one that
    ends at once, saying why; tests that need workers start the sweep in a subprocess."""
    monkeypatch.setattr(sys, "orig_argv", [sys.executable, "-c", "raise SystemExit('a sweep run inside a test "
                                           "started a worker: run a sweep with n_jobs > 1 in a subprocess')"])


@pytest.fixture(autouse=True)
def signal_handlers_left_as_found():
    """A sweep run in this process (an interrupt recorded, a job stopped) gives the process its signal
    handlers back: an embedding program, and the subprocesses later tests start, inherit what it left
    (a SIGTERM left ignored made a later test's child unkillable but by SIGKILL)."""
    import signal

    watched = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    before = {s: signal.getsignal(s) for s in watched}
    yield
    after = {s: signal.getsignal(s) for s in watched}
    changed = {signal.Signals(s).name: after[s] for s in watched if after[s] is not before[s]}
    for s in watched:
        signal.signal(s, before[s])  # the next test starts as this one did, whatever happened
    assert not changed, f"the test left signal handlers changed: {changed}"


@pytest.fixture(autouse=True)
def no_log_handler_on_a_closed_stream():
    """A logging handler made during an earlier test writes to the stream that test captured: Optuna's
    own handler (made at its first message in the process) and Hydra's root handler (made for each job
    run in this process). Once that stream is closed (the end of a capsys test, or of a whole earlier
    pytest run in the process, as under mutmut, which runs the suite twice in one process), every
    message through the handler makes Python write "--- Logging error ---" on the stderr a test
    reads. Each test starts with such handlers gone."""
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for handler in getattr(logger, "handlers", [])[:]:
            if getattr(getattr(handler, "stream", None), "closed", False):
                logger.removeHandler(handler)
