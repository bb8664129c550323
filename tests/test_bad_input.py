"""Every row of README's bad-input table through ``mnist-train``'s own ``main()`` (in this process, as
the console script calls it: seconds, not an interpreter and torch per row); a few rows also through
the installed command in a subprocess, exit status and stderr as a user sees them."""

import re
import shlex

import optuna
import pytest

from mnist_arch.train import main

from .support import REPO, in_process, run_cli

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


def check_one_clear_line(code, out, err, tmp_path, url, expected):
    assert code == 1, err[-2000:]
    errors = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and expected in errors[0], err[-2000:]
    assert "Traceback" not in err
    assert "pw" not in (out + err).replace("password", "")  # a URL's password is never printed
    study = optuna.load_study(study_name="smoke", storage=url)
    assert not [t for t in study.trials if t.user_attrs.get("launched")]  # nothing trained
    assert not (tmp_path / "run" / "metrics.json").exists()


def where(tmp_path):
    url = f"sqlite:///{tmp_path}/sweeps.db"
    optuna.create_study(study_name="smoke", storage=url, direction="maximize")
    return url, [f"hydra.run.dir={tmp_path}/run", f"hydra.sweep.dir={tmp_path}/sweep"]


@pytest.mark.parametrize("args, expected", readme_rows())
def test_bad_input_is_one_clear_line(tmp_path, monkeypatch, capfd, args, expected):
    url, dirs = where(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MNIST_SWEEP_STORAGE", url)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    code = in_process(main, ["mnist-train", *args, *dirs])
    out, err = capfd.readouterr()
    check_one_clear_line(code, out, err, tmp_path, url, expected)


CONSOLE_ROWS = ["model=huge", "-m +search=smoke hydra.sweeper.storage=nonsense", "optim.lr=inf"]


@pytest.mark.parametrize("args, expected", [p for p in readme_rows() if " ".join(p.values[0]) in CONSOLE_ROWS])
def test_bad_input_through_the_console_script_is_one_clear_line(tmp_path, args, expected):
    url, dirs = where(tmp_path)
    proc = run_cli(["mnist_arch.train", *args, *dirs], cwd=tmp_path, env={"MNIST_SWEEP_STORAGE": url})
    check_one_clear_line(proc.returncode, proc.stdout, proc.stderr, tmp_path, url, expected)


def test_the_console_rows_are_in_the_table():
    assert len([p for p in readme_rows() if " ".join(p.values[0]) in CONSOLE_ROWS]) == len(CONSOLE_ROWS)
