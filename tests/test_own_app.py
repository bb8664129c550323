"""What a user bringing their own Hydra app meets around the sweeper: the toy app's sweeps in this process
(seconds each): a failing job's traceback kept, group options checked before any trial, one-line errors."""

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from sweeper.storage import open_storage

from .support import in_process

optuna.logging.set_verbosity(optuna.logging.WARNING)


def sweep(tmp_path: Path, *overrides: str) -> int:
    """``python -m tests.toy_app.app -m ...`` in this process; its exit status (0 when it returned)."""
    from tests.toy_app.app import main

    return in_process(main, ["app", "-m", f"hydra.sweeper.storage=sqlite:///{tmp_path}/sweeps.db",
                             f"hydra.sweep.dir={tmp_path}/sweep", "hydra.sweeper.study_name=own", *overrides])


def trials(tmp_path):
    return optuna.load_study(study_name="own", storage=open_storage(f"sqlite:///{tmp_path}/sweeps.db")).trials


# ------------------------------------------------------------------ a failing job's traceback


def test_a_failing_jobs_traceback_goes_to_its_folder_the_trial_and_the_sweeps_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    assert sweep(tmp_path, "x=choice(1,2)", "raise_on=[2]", "hydra.sweeper.n_trials=2", "hydra/sweeper/sampler=grid",
                 "hydra.sweeper.max_failure_rate=1.0") == 0
    failed = [t for t in trials(tmp_path) if t.state == TrialState.FAIL]
    assert len(failed) == 1
    (t,) = failed
    log_file = tmp_path / "sweep" / str(t.number) / "error.log"
    text = log_file.read_text()
    app = str(Path(__file__).parent / "toy_app" / "app.py")
    # the app's own file and line, and the error; not the sweeper's wrapper frame
    assert text.startswith("Traceback (most recent call last):") and f'File "{app}", line' in text
    assert 'raise RuntimeError(f"boom at x={cfg.x}")' in text and text.rstrip().endswith("RuntimeError: boom at x=2")
    assert "tracebacks.py" not in text
    assert t.user_attrs["error_log"] == str(log_file)
    assert t.user_attrs["traceback"].endswith("RuntimeError: boom at x=2") and app in t.user_attrs["traceback"]
    assert len(t.user_attrs["traceback"].splitlines()) <= 15
    assert t.user_attrs["error"] == f"RuntimeError: boom at x=2 (traceback: {log_file})"
    out, err = capsys.readouterr()  # Hydra logs to stdout
    line = next(line for line in out.splitlines() if f"trial {t.number} FAIL" in line)
    assert line.endswith(f"RuntimeError: boom at x=2 (traceback: {log_file})")
    assert "Traceback" not in out + err  # one line per trial unless asked for more
    complete = [t for t in trials(tmp_path) if t.state == TrialState.COMPLETE]
    assert not (tmp_path / "sweep" / str(complete[0].number) / "error.log").exists()


def test_hydra_full_error_prints_a_failing_jobs_traceback_whole(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    assert sweep(tmp_path, "x=choice(2)", "raise_on=[2]", "hydra.sweeper.n_trials=1",
                 "hydra.sweeper.max_failure_rate=1.0") == 0
    err = capsys.readouterr().err
    assert "trial 0: the job failed:\nTraceback (most recent call last):" in err
    assert str(Path(__file__).parent / "toy_app" / "app.py") in err and "RuntimeError: boom at x=2" in err


@pytest.mark.parametrize("raised, kept_it", [(optuna.TrialPruned(), False), (KeyboardInterrupt(), False),
                                             (RuntimeError("diverged"), True), (ValueError("bad width"), True)])
def test_only_a_jobs_own_failure_is_kept_not_a_prune_or_an_interrupt(raised, kept_it):
    from sweeper.tracebacks import KeepTraceback, kept

    def task(cfg):
        raise raised

    with pytest.raises(type(raised)) as info:
        KeepTraceback(task)(None)
    text, path = kept(info.value)
    assert (text is not None) == kept_it and path is None  # no Hydra job around: no folder to write to
    if kept_it:
        assert "in task" in text and "KeepTraceback" not in text and text.rstrip().endswith(str(raised))
