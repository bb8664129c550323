"""hydra.sweeper.callbacks: Optuna study callbacks from config, called for every trial the sweep records."""

import json

import pytest

from .test_repeats import sweep, trials


def calls(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_recorded_trial_reaches_the_callbacks_rejected_and_raced_ones_with_their_state(tmp_path):
    log = tmp_path / "calls.jsonl"
    callback = f"hydra.sweeper.callbacks=[{{_target_: tests.toy_app.callbacks.Recorder, path: '{log}'}}]"
    budget = ["+hydra.sweeper.budget.measure=tests.toy_app.measure.x_squared", "+hydra.sweeper.budget.max=9"]
    assert sweep(tmp_path, "x=range(0,6)", "hydra.sweeper.n_trials=3", callback, *budget, "hydra.sweeper.repeats.n=2",
                 "hydra.sweeper.repeats.aggregate=min", "hydra.sweeper.repeats.race=true") == 0
    recorded = trials(tmp_path)
    got = calls(log)
    assert [c["number"] for c in got] == [t.number for t in recorded]  # each once, in the order they were told
    by_number = {t.number: t for t in recorded}
    for c in got:
        t = by_number[c["number"]]
        assert c["study"] == "repeats" and c["state"] == t.state.name and c["rejected"] == t.user_attrs.get("rejected")
    assert any(c["rejected"] == "over_budget" for c in got)  # x > 3 never trained, still told
    assert any(c["state"] == "COMPLETE" for c in got)


def test_a_failing_callback_is_a_warning_and_a_bad_one_a_line(tmp_path, capsys):
    log = tmp_path / "calls.jsonl"
    failing = f"hydra.sweeper.callbacks=[{{_target_: tests.toy_app.callbacks.Recorder, path: '{log}', fail_on: 0}}]"
    assert sweep(tmp_path, "x=range(0,3)", "hydra.sweeper.n_trials=2", failing) == 0
    assert [c["number"] for c in calls(log)] == [1]  # trial 0's call raised; the sweep went on
    line = "hydra.sweeper.callbacks: Recorder failed on trial 0 (the sweep goes on): RuntimeError: tracker down at trial 0"
    out = capsys.readouterr()
    assert any(logged.endswith(f"][HYDRA] {line}") for logged in (out.out + out.err).splitlines())  # the whole line
    missing = "hydra.sweeper.callbacks=[{_target_: optuna_integration.NoSuchCallback}]"
    assert sweep(tmp_path / "b", "x=range(0,3)", missing) == 1
    err = capsys.readouterr().err
    assert "hydra.sweeper.callbacks[0] (optuna_integration.NoSuchCallback) cannot be made" in err
    assert "Traceback" not in err and not (tmp_path / "b" / "sweeps.db").exists()  # refused before any study


def test_optuna_integrations_mlflow_callback_logs_every_trial_as_a_run(tmp_path):
    mlflow = pytest.importorskip("mlflow")  # the [mlflow] extra (the test extra installs it)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    callback = (f"hydra.sweeper.callbacks=[{{_target_: optuna_integration.MLflowCallback, tracking_uri: '{uri}', "
                "metric_name: x_value}]")
    budget = ["+hydra.sweeper.budget.measure=tests.toy_app.measure.x_squared", "+hydra.sweeper.budget.max=9"]
    assert sweep(tmp_path, "x=range(0,6)", "hydra.sweeper.n_trials=3", callback, *budget) == 0
    recorded = trials(tmp_path)
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["repeats"], output_format="list")
    assert sorted(int(r.data.params["x"]) for r in runs) == sorted(t.params["x"] for t in recorded)
    complete = {t.params["x"]: t.value for t in recorded if t.state.name == "COMPLETE"}
    logged = {int(r.data.params["x"]): r.data.metrics.get("x_value") for r in runs if r.data.tags.get("state") == "COMPLETE"}
    assert logged == complete and len(complete) == 3
