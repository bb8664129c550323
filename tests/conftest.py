import pytest


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
