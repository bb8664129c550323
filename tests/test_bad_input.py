"""Every row of README's bad-input table, through the real command line."""

import re
import shlex

import optuna
import pytest

from .support import REPO, run_cli

pytestmark = pytest.mark.slow


def readme_rows():
    text = (REPO / "README.md").read_text()
    table = text.split("<!-- bad-input-table: begin -->")[1].split("<!-- bad-input-table: end -->")[0]
    rows = []
    for line in table.strip().splitlines()[2:]:
        args, expected = re.findall(r"`([^`]*)`", line)
        rows.append(pytest.param(shlex.split(args), expected, id=args[:60]))
    return rows


def test_the_table_covers_what_the_issue_lists():
    ids = " ".join(" ".join(p.values[0]) for p in readme_rows())
    for needle in ("model=huge", "trainer.epoch=", "=many", "epochs=0", "batch_size=0", "max_params=0",
                   "optuna_budget", "sampler=", "pruner=", "redis2", "127.0.0.1:1", "direction", "blocks=", "lr=inf",
                   "momentum=2", "weight_decay=-1", "objectives=[nope]", "study_name=", "sqlite://x.db", "/proc/",
                   "?password=", "max_failure_rate="):
        assert needle in ids


@pytest.mark.parametrize("args, expected", readme_rows())
def test_bad_input_is_one_clear_line(tmp_path, args, expected):
    url = f"sqlite:///{tmp_path}/sweeps.db"
    optuna.create_study(study_name="smoke", storage=url, direction="maximize")
    proc = run_cli(["mnist_arch.train", *args, f"hydra.run.dir={tmp_path}/run", f"hydra.sweep.dir={tmp_path}/sweep"],
                   cwd=tmp_path, env={"MNIST_SWEEP_STORAGE": url})
    assert proc.returncode == 1, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and expected in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "pw" not in (proc.stdout + proc.stderr).replace("password", "")  # a URL's password is never printed
    study = optuna.load_study(study_name="smoke", storage=url)
    assert not [t for t in study.trials if t.user_attrs.get("launched")]  # nothing trained
    assert not (tmp_path / "run" / "metrics.json").exists()
