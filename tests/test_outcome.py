"""What a finished job means for its trial (sweeper.outcome), in process: every kind of return value, and
every reason a trial fails, compared whole."""

import math

import optuna
import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from optuna.trial import TrialState

from sweeper.outcome import job_outcome, returned_metrics

COMPLETE, PRUNED, FAIL = TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL


def done(value):
    return JobReturn(status=JobStatus.COMPLETED, _return_value=value)


def failed(exc):
    return JobReturn(status=JobStatus.FAILED, _return_value=exc)


@pytest.mark.parametrize("returned, objectives, n, values", [
    (0.5, None, 1, [0.5]),
    (3, ["acc"], 1, [3.0]),  # one direction: a bare number is its value, named or not
    ((1, 2), None, 2, [1.0, 2.0]),
    ([1, "2.5"], None, 2, [1.0, 2.5]),  # a number as text is read as a number
    (OmegaConf.create([4, 5]), None, 2, [4.0, 5.0]),  # a ListConfig (a job returning part of its config)
    ({"acc": 0.9, "loss": 0.1}, ["loss", "acc"], 2, [0.1, 0.9]),  # a dict: by name, in the objectives' order
    ({"acc": 0.9, "loss": 0.1}, ["acc"], 1, [0.9]),
    # a DictConfig is read resolved, as the dict it holds
    (OmegaConf.create({"acc": 0.75, "best": "${acc}"}), ["best", "acc"], 2, [0.75, 0.75]),
])
def test_a_job_that_returns_its_objectives_completes_with_them_as_floats(returned, objectives, n, values):
    state, got, reason = job_outcome(done(returned), {}, objectives, n)
    assert (state, got, reason) == (COMPLETE, values, None)
    assert all(type(v) is float for v in got)


def test_a_job_that_returns_nothing_is_read_from_the_attributes_it_stored_on_its_trial():
    attrs = {"acc": 0.8, "loss": 0.2, "other": 1}
    assert job_outcome(done(None), attrs, ["loss", "acc"], 2) == (COMPLETE, [0.2, 0.8], None)
    # a number returned for two named objectives is not a value: the stored ones are read
    assert job_outcome(done(5), attrs, ["acc", "loss"], 2) == (COMPLETE, [0.8, 0.2], None)
    assert job_outcome(done(5), attrs, None, 1) == (COMPLETE, [5.0], None)


@pytest.mark.parametrize("returned, attrs, objectives, n, reason", [
    (None, {}, None, 1, "the job returned no usable objective: the job returned None; return the objective "
                        "(a number, a tuple, or a dict with hydra.sweeper.objectives)"),
    ({"acc": 1, "loss": 2}, {}, None, 1, "the job returned no usable objective: the job returned a dict (acc, loss): "
                                         "name the values to optimise with hydra.sweeper.objectives"),
    ({"acc": 1, "n": 2}, {}, ["loss", "acc", "f1"], 3,
     "the job returned no usable objective: the job's result has no 'loss', 'f1'; it has: acc, n"),
    (OmegaConf.create({"acc": 1}), {}, ["loss"], 1,
     "the job returned no usable objective: the job's result has no 'loss'; it has: acc"),
    (None, {"acc": 1}, ["acc", "loss"], 2,
     "the job returned no usable objective: the job returned None and stored no 'loss' on its trial"),
    (7, {}, ["acc", "loss"], 2,
     "the job returned no usable objective: the job returned 7 and stored no 'acc', 'loss' on its trial"),
    ("high", {}, None, 1, "the job returned no usable objective: could not convert string to float: 'high'"),
    ([[1]], {}, None, 1, "the job returned no usable objective: float() argument must be a string or a real number, "
                         "not 'list'"),
    ((1, 2, 3), {}, None, 2, "the job returned 3 objective values for 2 directions"),
    (1.0, {}, None, 2, "the job returned 1 objective values for 2 directions"),
    ((1, math.nan), {}, None, 2, "objective is not finite: [1.0, nan]"),
    (-math.inf, {}, None, 1, "objective is not finite: [-inf]"),
])
def test_a_job_without_usable_objectives_fails_and_says_why(returned, attrs, objectives, n, reason):
    assert job_outcome(done(returned), attrs, objectives, n) == (FAIL, None, reason)


def test_a_failed_job_fails_with_its_exception_on_one_line_and_a_pruned_one_is_pruned():
    error = ValueError("the data\n   is   missing")
    assert job_outcome(failed(error), {}, None, 1) == (FAIL, None, "ValueError: the data is missing")
    assert job_outcome(failed(optuna.TrialPruned("epoch 3")), {}, None, 1) == (PRUNED, None, None)


@pytest.mark.parametrize("attr", ["pruned_at_step", "pruned_at_epoch"])  # today's name and earlier versions'
def test_a_job_the_pruner_stopped_is_pruned_whatever_it_returned(attr):
    assert job_outcome(done(0.9), {attr: 3}, None, 1) == (PRUNED, None, None)
    assert job_outcome(done(None), {attr: 3}, None, 1) == (PRUNED, None, None)


def test_the_metrics_kept_beside_the_objectives_are_the_numbers_named_or_every_number():
    returned = {"acc": 0.9, "loss": 0.1, "n": 3, "done": True, "name": "x", 5: 1.5}
    assert returned_metrics(returned, None) == {"acc": 0.9, "loss": 0.1, "n": 3, "5": 1.5}  # no bools, no text
    assert returned_metrics(returned, ["loss", "done", "name", "missing"]) == {"loss": 0.1}
    assert returned_metrics(returned, []) == {}
    assert returned_metrics(OmegaConf.create({"acc": 0.5, "best": "${acc}"}), None) == {"acc": 0.5, "best": 0.5}
    assert returned_metrics(0.9, None) == returned_metrics([0.9], None) == returned_metrics(None, None) == {}
