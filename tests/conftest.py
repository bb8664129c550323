import os

import pytest


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


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


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
