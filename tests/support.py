"""What the tests share: the real config, the real command line."""

import os
import subprocess
import sys
from pathlib import Path
from typing import List

from mnist_arch.config import compose_config

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"


def compose(*overrides: str):
    """The real training config, composed from conf/ with overrides (as mnist-train does)."""
    return compose_config(list(overrides))


def group_options(group: str) -> List[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def run_cli(args: List[str], cwd: Path, timeout: float = 600, env=None) -> subprocess.CompletedProcess:
    """Run a console script of the project the way a user would, in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), full_env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )
