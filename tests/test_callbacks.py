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


# ------------------------------------------------------------------ in process: what is made, what is called


def test_callbacks_are_made_from_their_nodes_and_each_mistake_is_one_line(tmp_path):
    from omegaconf import OmegaConf

    from sweeper.callbacks import make_callbacks
    from sweeper.errors import SweepError
    from tests.toy_app.callbacks import Recorder

    assert make_callbacks(None) == [] and make_callbacks([]) == []
    made = make_callbacks(OmegaConf.create([{"_target_": "tests.toy_app.callbacks.Recorder", "path": "a", "fail_on": 2},
                                            {"_target_": "tests.toy_app.callbacks.Recorder", "path": "b"}]))
    assert [(type(c), c.path, c.fail_on) for c in made] == [(Recorder, "a", 2), (Recorder, "b", -1)]
    assert [c.path for c in make_callbacks(({"_target_": "tests.toy_app.callbacks.Recorder", "path": "t"},))] == ["t"]
    (configured,) = make_callbacks(OmegaConf.create([{"_target_": "tests.toy_app.callbacks.Configured",
                                                      "options": {"tags": ["a", "b"], "nested": {"n": 1}}}]))
    assert configured.options == {"tags": ["a", "b"], "nested": {"n": 1}}  # plain containers, as the callback expects
    assert type(configured.options) is dict and type(configured.options["tags"]) is list

    def refused(nodes):
        with pytest.raises(SweepError) as info:
            make_callbacks(nodes)
        assert info.value.__cause__ is None
        return str(info.value)

    not_a_list = "hydra.sweeper.callbacks must be a list of {_target_: ...} nodes"
    assert refused({"_target_": "x"}) == refused("x") == not_a_list
    no_target = ("hydra.sweeper.callbacks[1] has no _target_: give the callback's dotted path, e.g. "
                 "{_target_: optuna_integration.MLflowCallback}")
    ok = {"_target_": "tests.toy_app.callbacks.Recorder", "path": "a"}
    assert refused([ok, {"path": "a"}]) == refused([ok, "tests.toy_app.callbacks.Recorder"]) == no_target
    assert refused(OmegaConf.create([ok, {"path": "a"}])) == no_target
    with pytest.raises(SweepError) as info:  # the cause is in the line; its traceback is not shown
        make_callbacks([{"_target_": "tests.toy_app.callbacks.Recorder"}])
    assert info.value.__suppress_context__
    assert refused([ok, {"_target_": "tests.toy_app.callbacks.Recorder"}]) == (
        "hydra.sweeper.callbacks[1] (tests.toy_app.callbacks.Recorder) cannot be made: Recorder.__init__() missing 1 "
        "required positional argument: 'path'")
    assert refused([{"_target_": "builtins.dict"}]) == (
        "hydra.sweeper.callbacks[0] (builtins.dict) is not callable as callback(study, trial)")


def test_each_callback_gets_the_trial_as_recorded_and_a_failing_one_is_a_warning(tmp_path, caplog):
    import logging

    import optuna

    from sweeper.callbacks import notify
    from tests.toy_app.callbacks import Recorder

    study = optuna.create_study(study_name="cb", direction="maximize")
    trial = study.ask()
    study.tell(trial, 0.5)
    trial = study.ask()
    trial.set_user_attr("rejected", "over_budget")
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    seen = []
    first, second = Recorder(str(tmp_path / "a.jsonl"), fail_on=0), Recorder(str(tmp_path / "b.jsonl"))
    with caplog.at_level(logging.WARNING, logger="sweeper.optuna_sweeper"):
        notify([first, lambda s, t: seen.append((s, t)), second], study, study.trials[0]._trial_id)
        notify([first, second], study, study.trials[1]._trial_id)
        notify([], study, -1)  # no callbacks: the trial is not even read
    assert [(s, t.number, t.state.name, t.value) for s, t in seen] == [(study, 0, "COMPLETE", 0.5)]
    assert calls(tmp_path / "b.jsonl") == [
        {"study": "cb", "number": 0, "state": "COMPLETE", "value": 0.5, "rejected": None},
        {"study": "cb", "number": 1, "state": "FAIL", "value": None, "rejected": "over_budget"}]
    assert [c["number"] for c in calls(tmp_path / "a.jsonl")] == [1]  # its call on trial 0 raised; it was called again
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        ("sweeper.optuna_sweeper", "WARNING", "hydra.sweeper.callbacks: Recorder failed on trial 0 (the sweep goes on): "
                                              "RuntimeError: tracker down at trial 0")]
