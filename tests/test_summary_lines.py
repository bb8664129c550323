"""A trial's line and the end of a sweep (sweeper.summary_lines), in process: each part of the line, the best so
far in either direction, and optimization_results.yaml. (What a whole sweep prints: test_own_app.py.)"""

import logging

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from sweeper.budget import BudgetGate
from sweeper.summary_lines import log_trial, metric_names, write_results

from .test_boundaries import sweeper_with


def sweeper(direction="maximize", n_trials=5, objectives=None):
    made = sweeper_with(direction=direction, n_trials=n_trials, objectives=objectives)
    made.gate = BudgetGate(lambda overrides: None, None, "n_params")
    return made


def study_of(direction, *trials):
    study = optuna.create_study(directions=direction if isinstance(direction, list) else [direction])
    for t in trials:
        study.add_trial(t)
    return study


def done(value, launched=True, steps=0, state=TrialState.COMPLETE, **attrs):
    return create_trial(state=state, value=value if state == TrialState.COMPLETE else None,
                        params={"x": value or 0},
                        distributions={"x": optuna.distributions.FloatDistribution(-100, 100)},
                        intermediate_values={s: float(s) for s in range(1, steps + 1)},
                        user_attrs={"launched": launched, **attrs})


def line(caplog, *args):
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sweeper.optuna_sweeper"):
        log_trial(*args)
    assert [r.name for r in caplog.records] == ["sweeper.optuna_sweeper"]
    return caplog.records[0].getMessage()


def test_a_trials_line_has_its_value_size_steps_seconds_best_and_trials_left(caplog):
    study = study_of("maximize", done(0.5), done(0.98765, steps=3), done(0.7, launched=False), done(
        None, state=TrialState.PRUNED, steps=2), done(
        None, launched=False, state=TrialState.FAIL, rejected="over_budget"))
    s = sweeper(n_trials=5)
    # trained: 0, 1 and the pruned 3 (2 repeated a trained point, 4 was over budget: neither launched): 5 - 3 left
    assert line(caplog, s, study, 1, TrialState.COMPLETE, [0.98765], {"n_params": 12345}, 61.6, None) == (
        "trial 1 COMPLETE 0.9877 | 12,345 n_params | 3 steps | 62s | best 0.9877 (trial 1) | 2 left")
    assert line(caplog, s, study, 3, TrialState.PRUNED, None, {"n_params": None}, 0.4, None) == (
        "trial 3 PRUNED - | 2 steps | 0s | best 0.9877 (trial 1) | 2 left")
    assert line(caplog, s, study, 9, TrialState.FAIL, [], {}, 2.5, "ValueError: bad") == (
        "trial 9 FAIL - | 2s | best 0.9877 (trial 1) | 2 left | ValueError: bad")
    assert line(caplog, sweeper(n_trials=2), study, 0, TrialState.COMPLETE, [0.5], {}, 1, None) == (
        "trial 0 COMPLETE 0.5 | 1s | best 0.9877 (trial 1) | 0 left")  # more trained than n_trials: none left


def test_the_best_so_far_follows_the_direction_and_is_left_out_before_any_trial_completes(caplog):
    trials = [done(3.0), done(-2.0), done(None, state=TrialState.FAIL), done(7.5, launched=False)]
    least = study_of("minimize", *trials)
    assert line(caplog, sweeper("minimize"), least, 1, TrialState.COMPLETE, [-2.0], {}, 3, None) == (
        "trial 1 COMPLETE -2 | 3s | best -2 (trial 1) | 3 left")
    assert line(caplog, sweeper(), study_of("maximize", *trials), 1, TrialState.COMPLETE, [-2.0], {}, 3, None) == (
        "trial 1 COMPLETE -2 | 3s | best 7.5 (trial 3) | 3 left")  # a duplicate's recorded value counts too
    assert line(caplog, sweeper(), study_of("maximize", done(None, state=TrialState.FAIL)), 0, TrialState.FAIL, None,
                {}, 3, "boom") == "trial 0 FAIL - | 3s | 5 left | boom"


def test_a_multi_objective_trials_line_has_every_value_and_no_best(caplog):
    study = study_of(["maximize", "minimize"])
    study.add_trial(create_trial(state=TrialState.COMPLETE, values=[0.99, 4000.0], user_attrs={"launched": True}))
    s = sweeper(["maximize", "minimize"])
    assert line(caplog, s, study, 0, TrialState.COMPLETE, [0.99, 4000.0], {}, 3, None) == (
        "trial 0 COMPLETE 0.99/4000 | 3s | 4 left")


def test_the_metric_names_are_the_studys_then_the_objectives_then_objective_per_direction():
    study = study_of(["maximize", "minimize"])
    assert metric_names(sweeper(["maximize", "minimize"]), study) == ["objective", "objective"]
    assert metric_names(sweeper(["maximize", "minimize"], objectives=["acc", "n"]), study) == ["acc", "n"]
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        study.set_metric_names(["accuracy", "size"])
    assert metric_names(sweeper(["maximize", "minimize"], objectives=["acc", "n"]), study) == ["accuracy", "size"]


@pytest.mark.parametrize("direction, best", [("maximize", "x: 3.0\nbest_value: 3.0"),
                                             ("minimize", "x: -2.0\nbest_value: -2.0")])
def test_the_results_file_holds_the_best_trial_of_the_direction(tmp_path, caplog, direction, best):
    study = study_of(direction, done(3.0), done(-2.0), done(None, state=TrialState.FAIL))
    with caplog.at_level(logging.INFO, logger="sweeper.optuna_sweeper"):
        write_results(sweeper(direction, objectives=["acc"]), study, str(tmp_path))
    assert (tmp_path / "optimization_results.yaml").read_text() == f"name: optuna\nbest_params:\n  {best}\n"
    number, value = (0, 3) if direction == "maximize" else (1, -2)
    assert [r.getMessage() for r in caplog.records] == [f"best trial {number}: acc = {value} with {{'x': {value:.1f}}}"]


def test_a_sweep_with_no_complete_trial_writes_no_results_file(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="sweeper.optuna_sweeper"):
        write_results(sweeper(), study_of("maximize", done(None, state=TrialState.FAIL)), str(tmp_path))
    assert [r.getMessage() for r in caplog.records] == ["no trial completed"] and list(tmp_path.iterdir()) == []
