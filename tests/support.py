"""What the tests share: the real config, the real command line."""

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, List

from mnist_arch.config import compose_config

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"


def compose(*overrides: str):
    """The real training config, composed from conf/ with overrides (as mnist-train does)."""
    return compose_config(list(overrides))


def group_options(group: str) -> List[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def in_process(main: Callable[[], Any], argv: List[str]) -> int:
    """A command's ``main()`` run in this process with ``argv``; its exit status (0 when it returned).

    Hydra internals the command replaces for itself (mnist-train's one-line reporting) are put back.
    """
    import hydra._internal.utils as hydra_internal

    saved_argv, saved_report = sys.argv, hydra_internal.run_and_report
    sys.argv = list(argv)
    try:
        main()
        return 0
    except SystemExit as exc:
        return exc.code
    finally:
        sys.argv, hydra_internal.run_and_report = saved_argv, saved_report


def run_cli(args: List[str], cwd: Path, timeout: float = 600, env=None) -> subprocess.CompletedProcess:
    """Run a console script of the project the way a user would, in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), full_env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )
