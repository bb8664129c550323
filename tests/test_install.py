"""The sweeper installs without torch: its distribution's own dependencies are hydra-core, omegaconf and
optuna; the MNIST app's (torch, torchvision) come with the [mnist] extra only."""

import email.parser
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .support import REPO

SWEEPER_DEPENDENCIES = {"hydra-core", "omegaconf", "optuna"}


def built_metadata(tmp_path: Path):
    """The METADATA setuptools builds for the wheel (PEP 517's prepare_metadata hook), parsed."""
    subprocess.run([sys.executable, "-c", "import sys; from setuptools import build_meta as b; "
                    "b.prepare_metadata_for_build_wheel(sys.argv[1])", str(tmp_path)],
                   cwd=REPO, check=True, capture_output=True, timeout=300)
    (dist_info,) = tmp_path.glob("*.dist-info")
    return email.parser.Parser().parsestr((dist_info / "METADATA").read_text()), dist_info


def requirements(metadata):
    """{(name, extra or None)} of Requires-Dist."""
    out = set()
    for line in metadata.get_all("Requires-Dist"):
        spec, _, marker = line.partition(";")
        name = spec.strip().split("[")[0].split(">")[0].split("<")[0].split("=")[0].split("!")[0].strip().lower()
        extra = marker.split("extra ==")[1].strip().strip("'\"") if "extra ==" in marker else None
        out.add((name, extra))
    return out


def test_the_distribution_needs_hydra_omegaconf_and_optuna_only_torch_is_an_extra(tmp_path):
    metadata, dist_info = built_metadata(tmp_path)
    reqs = requirements(metadata)
    assert {name for name, extra in reqs if extra is None} == SWEEPER_DEPENDENCIES
    assert {extra for name, extra in reqs if name in ("torch", "torchvision")} == {"mnist"}
    assert ("mnist-arch-sweep", "test") in reqs  # [test] brings the MNIST app with it
    for extra in ("plots", "samplers", "postgres", "mnist", "test"):
        assert extra in metadata.get_all("Provides-Extra")
    scripts = (dist_info / "entry_points.txt").read_text()
    assert "sweep-results = sweeper.results:main" in scripts and "mnist-results = sweeper.results:main" in scripts


@pytest.mark.slow
def test_the_readme_own_app_example_runs_where_only_the_sweeper_is_installed(tmp_path):
    """A fresh virtual environment, `pip install <this repo>` without extras: no torch in it, and README's
    own-app block runs as written (the sweep, then the results table)."""
    from .test_any_app import run_own_app_example

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", str(REPO)],
                             capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stderr[-3000:]
    probe = subprocess.run([str(python), "-c", "import importlib.util as u; "
                            "print([m for m in ('torch', 'torchvision', 'matplotlib') if u.find_spec(m)])"],
                           capture_output=True, text=True, timeout=120)
    assert probe.stdout.strip() == "[]", probe.stdout + probe.stderr
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    run_own_app_example(work, env)
    # a sampler whose package is missing: one line naming what to install, before any trial
    for sampler, missing in [("cmaes", "cmaes is not installed"), ("qmc", "scipy is not installed"),
                             ("gp", "scipy and torch are not installed")]:
        proc = subprocess.run([str(python), "my_app/app.py", "-m", f"hydra/sweeper/sampler={sampler}",
                               f"hydra.sweeper.study_name=needs_{sampler}"], cwd=work, env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        (line,) = [x for x in proc.stderr.splitlines() if x.startswith("Error")]
        assert missing in line and line.endswith(("pip install 'mnist-arch-sweep[samplers]'" +
                                                  (" torch" if sampler == "gp" else ""))), line
    assert "needs_gp" not in subprocess.run([str(python), "-c", "import optuna; print(optuna.get_all_study_names("
                                             "'sqlite:///my_app.db'))"], cwd=work, capture_output=True, text=True).stdout
