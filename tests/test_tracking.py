"""The ``tracking`` config group against the real trackers: MLflow (a local store) and TensorBoard event files.

Each sweep here is real training (tiny model, 300 images, 2 epochs) run in this process: seconds each, so
marked slow; the refusals before training run by default.
"""

import socket
import sys
from pathlib import Path

import optuna
import pytest

from mnist_arch.tracking import flat_params, masked_uri
from sweeper.storage import open_storage

from .support import compose, in_process

SMALL = ["model=tiny", "data.train_subset=300", "data.test_subset=200", "trainer.epochs=2", "trainer.threads=1",
         "trainer.progress=false", "hydra/sweeper/pruner=none"]


def mnist_train(tmp_path: Path, *overrides: str, multirun: bool = True) -> int:
    """``mnist-train [-m] ...`` in this process (its one-line error reporting included); its exit status."""
    from mnist_arch.train import main

    where = ([f"hydra.sweeper.storage=sqlite:///{tmp_path}/sweeps.db", f"hydra.sweep.dir={tmp_path}/sweep",
              "hydra.sweeper.study_name=tracked"] if multirun else [f"hydra.run.dir={tmp_path}/run"])
    return in_process(main, ["mnist-train", *(["-m"] if multirun else []), *SMALL, *where, *overrides])


def trials(tmp_path: Path):
    return optuna.load_study(study_name="tracked", storage=open_storage(f"sqlite:///{tmp_path}/sweeps.db")).trials


def mlflow_runs(uri: str):
    mlflow = pytest.importorskip("mlflow")  # the [mlflow] extra (the test extra installs it)
    mlflow.set_tracking_uri(uri)
    return mlflow, mlflow.search_runs(experiment_names=["mnist_arch"], output_format="list")


def by_role(runs, role):
    return [r for r in runs if r.data.tags.get("sweep.role") == role]


@pytest.mark.slow
def test_mlflow_a_sweep_is_a_parent_run_with_a_nested_run_per_trial_and_a_resume_reuses_the_parent(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert mnist_train(tmp_path, "tracking=mlflow", f"tracking.uri={uri}", "hydra.sweeper.n_trials=2",
                       "optim.lr=interval(0.01,0.1)") == 0
    assert mnist_train(tmp_path, "tracking=mlflow", f"tracking.uri={uri}", "hydra.sweeper.n_trials=3",
                       "optim.lr=interval(0.01,0.1)") == 0  # the resume: one more trial
    mlflow, runs = mlflow_runs(uri)
    (parent,) = by_role(runs, "study")  # the resume found it again
    assert parent.info.run_name == "tracked" and parent.data.tags["sweep.dir"] == str(tmp_path / "sweep")
    nested = by_role(runs, "trial")
    assert len(nested) == 3 and all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in nested)
    client = mlflow.MlflowClient()
    recorded = {t.number: t for t in trials(tmp_path)}
    for run in nested:
        t = recorded[int(run.data.tags["sweep.trial"])]
        assert run.info.run_name == f"trial {t.number}" and run.info.status == "FINISHED"
        assert float(run.data.params["optim.lr"]) == pytest.approx(t.params["optim.lr"])  # the trial's own config
        assert run.data.params["model.widths.blocks"] == str(compose("model=tiny").model.widths.blocks)
        curve = client.get_metric_history(run.info.run_id, "test_acc")
        assert sorted((m.step, m.value) for m in curve) == list(enumerate(t.user_attrs["curve"], 1))  # every epoch
        assert run.data.metrics["best_test_acc"] == pytest.approx(t.value)
        assert run.data.metrics["n_params"] == t.user_attrs["n_params"]
        assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"metrics.json", "config.yaml"}


@pytest.mark.slow
def test_mlflow_each_repeat_is_nested_under_its_trial_which_holds_their_aggregate(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert mnist_train(tmp_path, "tracking=mlflow", f"tracking.uri={uri}", "hydra.sweeper.n_trials=1",
                       "optim.lr=choice(0.05)", "hydra.sweeper.repeats.n=2", "hydra.sweeper.repeats.aggregate=min") == 0
    _, runs = mlflow_runs(uri)
    (parent,), (trial,) = by_role(runs, "study"), by_role(runs, "trial")
    repeats = by_role(runs, "repeat")
    assert trial.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert sorted(r.info.run_name for r in repeats) == ["trial 0 seed 1", "trial 0 seed 2"]
    assert all(r.data.tags["mlflow.parentRunId"] == trial.info.run_id for r in repeats)
    assert sorted(r.data.params["seed"] for r in repeats) == ["1", "2"] and "seed" not in trial.data.params
    (t,) = trials(tmp_path)
    assert trial.data.metrics["best_test_acc"] == min(r.data.metrics["best_test_acc"] for r in repeats) == t.value
    assert trial.data.metrics["repeats_run"] == 2


@pytest.mark.slow
def test_mlflow_a_single_run_is_one_run_and_the_default_store_is_beside_the_sweep_database(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert mnist_train(tmp_path, "tracking=mlflow", multirun=False) == 0
    _, runs = mlflow_runs(f"sqlite:///{tmp_path}/outputs/mlflow.db")
    (run,) = runs
    assert run.data.tags["sweep.role"] == "run" and "mlflow.parentRunId" not in run.data.tags
    assert run.info.run_name == "run" and sorted(run.data.metrics)[:2] == ["best_epoch", "best_test_acc"]
    assert run.info.artifact_uri.startswith((tmp_path / "outputs" / "mlartifacts").as_uri())


@pytest.mark.slow
def test_tensorboard_writes_one_event_folder_per_trial_with_a_scalar_per_epoch(tmp_path):
    pytest.importorskip("tensorboard")  # the [tensorboard] extra (the test extra installs it)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert mnist_train(tmp_path, "tracking=tensorboard", "hydra.sweeper.n_trials=2", "optim.lr=interval(0.01,0.1)") == 0
    root = tmp_path / "sweep" / "tensorboard"
    assert sorted(p.name for p in root.iterdir()) == ["trial_0", "trial_1"]  # --logdir <sweep folder> overlays them
    for t in trials(tmp_path):
        events = EventAccumulator(str(root / f"trial_{t.number}"))
        events.Reload()
        assert [(e.step, pytest.approx(e.value)) for e in events.Scalars("test_acc")] == list(
            enumerate(t.user_attrs["curve"], 1))
        assert [e.step for e in events.Scalars("train_loss")] == [1, 2]
        assert events.Scalars("final/best_test_acc")[0].value == pytest.approx(t.value)
    assert mnist_train(tmp_path, "tracking=tensorboard", multirun=False) == 0  # a single run: its own folder
    single = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    single.Reload()
    assert [e.step for e in single.Scalars("test_acc")] == [1, 2]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed once the with ends: connections are refused


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["mlflow_unwritable", "mlflow_unreachable", "tensorboard_unwritable"])
def test_a_tracker_that_cannot_write_is_a_warning_never_a_failed_trial(tmp_path, kind, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")  # (the tests may run as root: a file in the way blocks even root)
    setting = {
        "mlflow_unwritable": ["tracking=mlflow", f"tracking.uri=sqlite:///{blocker}/mlflow.db"],
        "mlflow_unreachable": ["tracking=mlflow", f"tracking.uri=http://127.0.0.1:{closed_port()}",
                               "tracking.request_retries=0", "tracking.request_timeout_s=2"],
        "tensorboard_unwritable": ["tracking=tensorboard", f"tracking.log_dir={blocker}/tb"],
    }[kind]
    if kind == "tensorboard_unwritable":
        pytest.importorskip("tensorboard")
    else:
        pytest.importorskip("mlflow")
    assert mnist_train(tmp_path, *setting, "hydra.sweeper.n_trials=2", "optim.lr=interval(0.01,0.1)") == 0
    assert [t.state.name for t in trials(tmp_path)] == ["COMPLETE", "COMPLETE"]
    out = capsys.readouterr()
    warnings = [line for line in (out.out + out.err).splitlines() if "the run goes on untracked" in line]
    cause = {"mlflow_unwritable": "File exists", "mlflow_unreachable": "API request to http://127.0.0.1",
             "tensorboard_unwritable": "Not a directory"}[kind]  # the tracker's own failure, said
    assert len(warnings) == 2 and all("WARNING" in w and f"tracking={kind.split('_')[0]}" in w and cause in w
                                      for w in warnings)


@pytest.mark.slow
def test_a_password_written_in_the_tracking_uri_is_refused_and_one_from_the_environment_masked(
        tmp_path, capsys, monkeypatch):
    pytest.importorskip("mlflow")
    assert mnist_train(tmp_path, "tracking=mlflow", "tracking.uri=http://me:s3cret@127.0.0.1:1", multirun=False) == 1
    err = capsys.readouterr().err
    assert "tracking.uri='http://me:***@127.0.0.1:1' holds a password" in err and "MLFLOW_TRACKING_URI" in err
    assert "s3cret" not in err and "Traceback" not in err
    assert not (tmp_path / "run" / "metrics.json").exists()  # refused before any training
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://me:s3cret@127.0.0.1:{closed_port()}")
    assert mnist_train(tmp_path, "tracking=mlflow", "tracking.request_retries=0", "hydra.run.dir=" +
                       str(tmp_path / "run2"), multirun=False) == 0
    out = capsys.readouterr()
    assert "http://me:***@127.0.0.1" in out.out and "s3cret" not in out.out + out.err


def test_a_tracker_whose_package_is_missing_stops_before_training_naming_the_extra(tmp_path, capsys, monkeypatch):
    for kind in ("mlflow", "tensorboard"):
        monkeypatch.setitem(sys.modules, kind, None)  # import fails as if not installed
        assert mnist_train(tmp_path, f"tracking={kind}", f"hydra.run.dir={tmp_path}/{kind}", multirun=False) == 1
        err = capsys.readouterr().err
        assert f"tracking={kind} needs the {kind} package: pip install -e '.[{kind}]'" in err
        assert "Traceback" not in err and not (tmp_path / kind / "metrics.json").exists()
    assert mnist_train(tmp_path, "tracking.kind=wandb", multirun=False) == 1
    assert "tracking.kind='wandb' is not one of: none, mlflow, tensorboard" in capsys.readouterr().err


def test_masked_uri_hides_every_password_form_and_keeps_the_rest_as_written():
    assert masked_uri("https://me:pw@mlflow.example.com:5000/x") == "https://me:***@mlflow.example.com:5000/x"
    assert masked_uri("postgresql://me:pw@db/mlflow?sslmode=require&password=pw") == \
        "postgresql://me:***@db/mlflow?sslmode=require&password=***"
    assert masked_uri("sqlite:////abs/mlflow.db") == "sqlite:////abs/mlflow.db"
    assert masked_uri("http://me@host/") == "http://me@host/" and masked_uri("databricks") == "databricks"


def test_params_are_the_composed_config_flattened():
    params = flat_params(compose("model=tiny", "optim.lr=0.05"))
    assert params["optim.lr"] == "0.05" and params["model.widths.multiplier"] == "1.0"
    assert params["model.widths.blocks"] == str(list(map(list, compose("model=tiny").model.widths.blocks)))
    assert params["tracking.kind"] == "none" and not any(k.startswith("hydra") for k in params)


@pytest.mark.parametrize("uri, secrets", [
    ("http://me:s3cret@127.0.0.1:1", ["s3cret"]),
    ("postgresql://me@db/mlflow?sslmode=require&password=s3cret", ["s3cret"]),
    ("http://me:p%40ss%3Aw0rd@tracker:5000", ["p%40ss%3Aw0rd", "p@ss:w0rd"]),  # written encoded, shown decoded
])
def test_every_tracker_warning_hides_a_password_given_in_the_environment(monkeypatch, caplog, uri, secrets):
    """The tracker's calls fail with the library's own text, which may quote the URI: each warning line
    (starting a run, closing it) shows the password as *** only, whatever form the text has it in."""
    from mnist_arch.tracking import MLflowTracker, SweepPlace

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    caplog.set_level("WARNING", logger="mnist_arch.tracking")
    tracker = MLflowTracker(compose("tracking=mlflow"), SweepPlace())
    assert tracker.uri == uri

    def library_error():
        raise ConnectionError(f"cannot reach {uri}; credentials {' / '.join(secrets)} refused")

    tracker.guard(f"start a run at {masked_uri(uri)}", library_error)
    tracker.broken, tracker.run_id = False, "r1"
    tracker.client = type("Client", (), {"set_terminated": lambda self, *a: library_error()})()
    tracker.fail(RuntimeError("the run failed"))
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2 and all("***" in w for w in warnings)
    for secret in secrets:
        assert all(secret not in w for w in warnings), warnings
