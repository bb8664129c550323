"""The sweeper's parts in-process, in milliseconds: claim step and budget gate, reporter, liveness, masking.

No subprocess and no training: a real in-memory study, the toy app's real config composed by
Hydra, real pruners. The command-line tests (test_sweeper.py, test_any_app.py) cover the same
behaviour end to end; these make the default ``pytest`` catch it too.
"""

import contextlib
import dataclasses
import os
import re
import signal
import sys
import time
import warnings

import optuna
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from optuna.distributions import IntDistribution
from optuna.trial import TrialState

import sweeper.claim
import sweeper.config  # noqa: F401  registers hydra/sweeper=optuna_budget (the toy config selects it)
from sweeper.api import SweepTrial
from sweeper.budget import BudgetGate, Verdict
from sweeper.claim import ClaimStep
from sweeper.liveness import (
    HEARTBEAT_ATTR, HOST_PID_ATTR, LOST_WORKER_ATTR, NEVER_LAUNCHED, fail_never_launched, fail_stale_trials,
    fail_unlaunched_trials, process_started, settle_stopped_workers,
)
from sweeper.reporter import TrialReporter
from sweeper.samplers import FirstRepeatsPruner
from sweeper.storage import has_password, masked, scrubbed
from sweeper.table import trial_rows

from .support import REPO

optuna.logging.set_verbosity(optuna.logging.WARNING)
TOY_CONF = str(REPO / "tests" / "toy_app" / "conf")
SPACE = {"x": IntDistribution(0, 9)}
FIXED = {"hydra.sweeper.budget.max": "9"}  # x_squared(cfg) <= 9: x up to 3 may train


def load_toy(overrides):
    with initialize_config_dir(config_dir=TOY_CONF, version_base="1.3"):
        return compose("toy", overrides=list(overrides), return_hydra_config=True)


@contextlib.contextmanager
def hydra_job(overrides=(), output_dir=None, num=None):
    """The toy app's config as a running job sees it (``HydraConfig.get()``): in ``output_dir``, and as
    multirun job ``num`` when given; cleared after, so no other test finds a job running."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict

    cfg = load_toy(overrides)
    with open_dict(cfg):
        if output_dir is not None:
            cfg.hydra.runtime.output_dir = str(output_dir)
        if num is not None:
            cfg.hydra.mode, cfg.hydra.job.num = RunMode.MULTIRUN, num
    HydraConfig.instance().set_config(cfg)
    try:
        yield cfg
    finally:
        HydraConfig.instance().cfg = None


def claim_step(n_trials=2, space_size=None, max_failure_rate=0.0):
    gate = BudgetGate(load_toy, "tests.toy_app.measure.x_squared", "x2")
    return ClaimStep(None, gate, n_trials, max_failure_rate, grace_period=60, retry_stale_trials=False,
                     grid_size=None, space_size=space_size, custom_search_space=None, config=None)


def study_with(*xs):
    """An in-memory study whose next asks propose exactly these x, in order."""
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for x in xs:
        study.enqueue_trial({"x": x})
    return study


def train(study, claim, value=1.0):
    study.tell(claim.trial, value)


def claim_until_done(study, claim, space=SPACE, limit=20):
    """Claim, training each "run", until the step says "done"; the actions it took, in order."""
    actions = []
    for _ in range(limit):
        c = claim(study, space, FIXED, "0")
        actions.append(c.action)
        if c.action == "run":
            train(study, c)
        if c.action == "done":
            return actions
    raise AssertionError(f"not done after {limit} claims: {actions}")


# ------------------------------------------------------------------ the claim step and the budget gate


def test_over_budget_is_rejected_untrained_and_exactly_at_budget_may_train():
    study, claim = study_with(4, 3), claim_step()
    over = claim(study, SPACE, FIXED, "0")
    assert over.action == "skip" and over.verdict.rejected
    frozen = study.trials[0]
    assert frozen.state == TrialState.PRUNED and "launched" not in frozen.user_attrs
    assert frozen.user_attrs["rejected"] == "over_budget" and frozen.user_attrs["x2"] == 16
    assert frozen.user_attrs["reason"] == "x2=16 > hydra.sweeper.budget.max=9"
    assert frozen.user_attrs["budget_excess"] == 7.0 and frozen.user_attrs["budget_max"] == 9
    assert 0 < frozen.user_attrs["budget_check_seconds"] < 30  # what the rejection cost: composing and measuring
    at = claim(study, SPACE, FIXED, "0")
    assert at.action == "run" and at.trial.params == {"x": 3}
    frozen = study.trials[1]
    assert frozen.state == TrialState.RUNNING and frozen.user_attrs["launched"] is True
    assert frozen.user_attrs["budget_excess"] == 0.0 and frozen.user_attrs["overrides"] == [
        "x=3", "hydra.sweeper.budget.max=9"]

    # a limit interpolated from the app's own key (mnist_arch: ${budget.max_params}) is named by that key
    gate, study = claim_step().gate, study_with()
    verdict = gate.check(study.ask(), ["x=4", "+limit=10", "hydra.sweeper.budget.max=${limit}"])
    assert verdict.rejected and verdict.message == "x2=16 > limit=10" and study.trials[0].user_attrs["budget_max"] == 10


def test_a_base_config_that_fails_as_the_trial_did_stops_the_sweep_and_one_that_builds_or_fails_otherwise_does_not():
    from sweeper.errors import SweepError

    gate = claim_step().gate
    study = study_with()
    verdict = gate.check(study.ask(), ["x=3", "no_such_key=1"])  # unbuildable: recorded, not launched
    assert verdict == Verdict(False, None, verdict.message) and "no_such_key" in verdict.message
    assert study.trials[0].user_attrs["error"] == f"cannot build the trial's config: {verdict.message}"  # the table's
    with pytest.raises(SweepError) as info:  # the same error without the searched x: the sweep's own fault
        gate.check_base_config(["no_such_key=1"], verdict.message)
    assert str(info.value) == ("every trial would fail: the sweep's config cannot be built even without the "
                               f"searched values: {verdict.message}")
    assert gate.check_base_config(["hydra.sweeper.budget.max=9"], verdict.message) is None  # it builds: the trial's fault
    assert gate.check_base_config(["other_key=1"], verdict.message) is None  # it fails otherwise: left to the trial


def test_the_budget_gate_describes_itself_and_is_off_without_a_measure():
    on, off = claim_step().gate, BudgetGate(load_toy, None, "x2")
    assert on.active and not off.active
    assert on.describe() == ("x2 = tests.toy_app.measure.x_squared(cfg), over hydra.sweeper.budget.max: "
                             "recorded, never trained")
    assert off.describe() == "none (hydra.sweeper.budget.measure is not set)"
    assert off.check(study_with(5).ask(), ["x=5"]) is None  # no measure: nothing is over budget
    study = study_with()
    assert on.check(study.ask(), ["x=5"]) is None  # measured with no limit: recorded, feasible for Optuna's samplers
    assert {k: study.trials[0].user_attrs[k] for k in ("x2", "budget_max", "budget_excess")} == {
        "x2": 25, "budget_max": None, "budget_excess": -1.0}


def test_the_constraint_handed_to_optuna_4_samplers_is_the_budget_excess_under_either_name():
    from optuna.trial import create_trial

    from sweeper.trials import budget_constraint

    def trial(**attrs):
        return create_trial(state=TrialState.FAIL, user_attrs=attrs)

    assert budget_constraint(trial(budget_excess=7)) == (7.0,) and type(budget_constraint(trial(budget_excess=7))[0]) is float
    assert budget_constraint(trial(budget_excess=-3.5)) == (-3.5,)
    assert budget_constraint(trial(params_over_budget=12)) == (12.0,)  # a study of an earlier version
    assert budget_constraint(trial()) == (0.0,)  # nothing measured: feasible


def test_rejected_and_unlaunched_trials_do_not_count_toward_n_trials():
    study, claim = study_with(), claim_step(n_trials=2)
    orphan = study.ask(SPACE)  # claimed but never launched (a claim an outage cut short)
    for x in (5, 1, 6, 2, 0):
        study.enqueue_trial({"x": x})
    assert claim_until_done(study, claim) == ["skip", "run", "skip", "run", "done"]  # 5 and 6 are over budget; 0 is never asked
    assert study.trials[orphan.number].state == TrialState.FAIL
    assert study.trials[orphan.number].user_attrs["error"].startswith("never launched")
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 2


@pytest.mark.parametrize("lost_at", ["launched", "host_pid", "worker_started", "lock"])
def test_a_claim_an_outage_cut_short_and_that_is_retried_fails_its_trial_rather_than_wait_on_it(lost_at, monkeypatch,
                                                                                                 caplog):
    # The write lands but its answer is lost (the server went down under it): the claim fails and is retried.
    # Its trial stays RUNNING, marked as this live process's, and would have every worker wait on it for ever.
    from sqlalchemy.exc import OperationalError

    from sweeper.storage import retry_transient

    study, claim = study_with(1, 2), claim_step(n_trials=2)
    storage, lost = study._storage, []

    def answer_lost(key):
        if key == lost_at and not lost:
            lost.append(key)
            raise OperationalError("UPDATE", {}, Exception("terminating connection due to administrator command"))

    real_set = storage.set_trial_user_attr
    storage.set_trial_user_attr = lambda trial_id, key, value: (real_set(trial_id, key, value), answer_lost(key))
    real_lock = sweeper.claim.claim_lock

    @contextlib.contextmanager
    def release_lost(url):
        with real_lock(url):
            yield
        answer_lost("lock")  # the whole claim written, the lock's release lost

    monkeypatch.setattr(sweeper.claim, "claim_lock", release_lost)
    first = retry_transient(lambda: claim(study, SPACE, FIXED, "0"), "claiming the next trial", 60)  # as the sweeper
    assert lost == [lost_at] and first.action == "run" and first.trial.number == 1
    cut = study.trials[0]
    assert cut.state == TrialState.FAIL and cut.user_attrs["error"] == NEVER_LAUNCHED
    assert cut.user_attrs["launched"] is False  # never trained: not one of n_trials, nor a failure of a trained trial
    assert "trial 0 was claimed but never launched (database outage): marked failed" in caplog.messages
    train(study, first)
    assert claim_until_done(study, claim).count("run") == 1  # one more trained trial makes n_trials=2
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 2
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]


def test_an_outage_that_cuts_short_the_retry_too_after_it_settled_the_first_claim_is_waited_out(monkeypatch):
    from sqlalchemy.exc import OperationalError

    from sweeper.storage import retry_transient

    study, claim = study_with(1, 2), claim_step()
    claim._cut_short = left = study.ask(SPACE)  # a claim cut short after its ask
    real_fail_stale, failed = sweeper.claim.fail_stale_trials, []

    def outage_once(*args):
        if not failed:
            failed.append(args)
            raise OperationalError("SELECT", {}, Exception("server closed the connection unexpectedly"))
        return real_fail_stale(*args)

    monkeypatch.setattr(sweeper.claim, "fail_stale_trials", outage_once)
    first = retry_transient(lambda: claim(study, SPACE, FIXED, "0"), "claiming the next trial", 60)
    assert failed and first.action == "run" and first.trial.params == {"x": 2}
    assert study.trials[left.number].state == TrialState.FAIL and claim._cut_short is None


def test_a_grid_is_done_once_each_point_had_a_trial_not_counting_one_lost_to_a_dead_worker_or_one_queued():
    study, claim = study_with(1, 5, 2), dataclasses.replace(claim_step(n_trials=10, max_failure_rate=1.0), grid_size=3)
    lost = claim(study, SPACE, FIXED, "0").trial
    lost.set_user_attr("lost_worker", True)
    study.tell(lost, state=TrialState.FAIL)
    assert claim(study, SPACE, FIXED, "0").action == "skip"  # 5 is over budget: its point has had its trial
    study.tell(claim(study, SPACE, FIXED, "0").trial, state=TrialState.FAIL)  # so has a point whose job failed
    study.enqueue_trial({"x": 1})  # the lost point queued again
    assert not claim._grid_done(study.trials)  # 2 of 3 points had a trial
    again = claim(study, SPACE, FIXED, "0")
    assert again.action == "run" and again.trial.params == {"x": 1}
    assert claim(study, SPACE, FIXED, "1").action == "wait"  # every point had its trial, one still runs
    train(study, again)
    assert claim(study, SPACE, FIXED, "1").action == "done"


def test_a_custom_search_space_is_given_the_sweeps_config_and_the_trial_and_its_values_are_overrides():
    from omegaconf import OmegaConf

    def space(cfg, trial):  # as hydra-optuna-sweeper's custom_search_space: values derived from others
        trial.suggest_int("steps", cfg.steps_low, cfg.steps_low)

    study = study_with(2)
    claim = dataclasses.replace(claim_step(), custom_search_space=space, config=OmegaConf.create({"steps_low": 7}))
    got = claim(study, SPACE, FIXED, "0")
    assert got.action == "run" and got.trial.params == {"x": 2, "steps": 7}
    assert got.overrides == ["x=2", "steps=7", "hydra.sweeper.budget.max=9"]


def test_an_unbuildable_trial_is_failed_untrained_and_a_base_config_that_cannot_build_stops_the_sweep():
    from optuna.distributions import CategoricalDistribution

    from sweeper.errors import SweepError

    study, claim = study_with(), claim_step()
    got = claim(study, {"optimizer": CategoricalDistribution(["nope"])}, FIXED, "0")  # no such option of the group
    assert got.action == "skip" and not got.verdict.rejected and "nope" in got.verdict.message
    assert got.overrides == ["optimizer=nope", "hydra.sweeper.budget.max=9"]
    frozen = study.trials[0]
    assert frozen.state == TrialState.FAIL and "launched" not in frozen.user_attrs  # not PRUNED: not over budget
    with pytest.raises(SweepError, match=r"^every trial would fail: the sweep's config cannot be built even without "
                                         r"the searched values: .*no_such_key"):
        claim(study_with(2), SPACE, {**FIXED, "no_such_key": "1"}, "0")


def test_n_complete_trials_counts_the_running_trials_that_may_yet_complete():
    study, claim = study_with(1, 2, 3), dataclasses.replace(claim_step(n_trials=10), n_complete_trials=2)
    train(study, claim(study, SPACE, FIXED, "0"))
    running = claim(study, SPACE, FIXED, "0")
    assert claim(study, SPACE, FIXED, "1").action == "wait"  # 1 complete and 1 running: 2 may complete
    study.tell(running.trial, state=TrialState.PRUNED)  # it did not: one more is needed
    last = claim(study, SPACE, FIXED, "1")
    assert last.action == "run" and last.trial.params == {"x": 3}
    train(study, last)
    assert claim(study, SPACE, FIXED, "0").action == "done"


def test_a_claim_waits_for_the_study_lock_of_its_database_which_another_worker_holds(tmp_path):
    import socket
    import threading

    from sweeper.storage import claim_lock, open_storage

    url = f"sqlite:///{tmp_path}/sweeps.db"
    study = optuna.create_study(storage=open_storage(url), direction="maximize")
    study.enqueue_trial({"x": 1})
    step = dataclasses.replace(claim_step(), storage_url=url)
    claimed = []
    with claim_lock(url):  # as another worker process would, mid-claim (flock: one open file against another)
        claimer = threading.Thread(target=lambda: claimed.append(step(study, SPACE, FIXED, "7")))
        claimer.start()
        claimer.join(timeout=1.0)
        assert claimer.is_alive() and not claimed  # nothing asked while the lock is held
        assert [t.state for t in study.trials] == [TrialState.WAITING]
    claimer.join(timeout=60)
    assert [c.action for c in claimed] == ["run"]
    assert study.trials[0].user_attrs["worker"] == "7"  # the worker that claimed it, as its results line says
    assert study.trials[0].user_attrs["host_pid"] == f"{socket.gethostname()}:{os.getpid()}"  # its process, for liveness


def test_a_running_trial_counts_so_the_next_claim_waits():
    study, claim = study_with(1, 2), claim_step(n_trials=1)
    assert claim(study, SPACE, FIXED, "0").action == "run"
    assert claim(study, SPACE, FIXED, "1").action == "wait"


def test_a_trained_point_proposed_again_is_recorded_and_never_launched():
    study, claim = study_with(2, 2), claim_step(n_trials=3)
    train(study, claim(study, SPACE, FIXED, "0"))
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        again = claim(study, SPACE, FIXED, "0")
    assert not warned  # told FAIL as such, not as a value Optuna could not read
    assert again.action == "skip" and again.overrides == ["x=2", "hydra.sweeper.budget.max=9"]
    assert again.verdict == Verdict(False, None, "the same parameters as trial 0", duplicate=True)
    frozen = study.trials[1]
    assert frozen.state == TrialState.FAIL and frozen.user_attrs["rejected"] == "duplicate"
    assert frozen.user_attrs["overrides"] == ["x=2", "hydra.sweeper.budget.max=9"]  # what the results table shows
    assert frozen.user_attrs["reason"] == "the same parameters as trial 0" and "launched" not in frozen.user_attrs


def test_a_discrete_space_is_done_when_every_point_is_trained_or_over_budget_and_says_so_once(caplog):
    caplog.set_level("INFO", logger="sweeper.optuna_sweeper")
    study, claim = study_with(0, 1), claim_step(n_trials=10, space_size=2)
    train(study, claim(study, SPACE, FIXED, "0"))
    train(study, claim(study, SPACE, FIXED, "0"))
    assert [claim(study, SPACE, FIXED, "0").action for _ in range(2)] == ["done", "done"]
    assert caplog.messages == ["every one of the search space's 2 points has been tried: the sweep ends"]
    caplog.clear()
    study, claim = study_with(0, 5), claim_step(n_trials=10, space_size=2)
    train(study, claim(study, SPACE, FIXED, "0"))
    assert claim(study, SPACE, FIXED, "0").action == "skip"  # 5 is over budget
    assert claim(study, SPACE, FIXED, "0").action == "done"
    assert caplog.messages[-1] == ("every one of the search space's 2 points has been tried (1 over budget or "
                                   "unbuildable): the sweep ends")


def test_failures_over_the_rate_stop_and_n_trials_failures_end_even_at_rate_one():
    from sweeper.errors import SweepError

    study, claim = study_with(1, 2, 3), claim_step(n_trials=2, max_failure_rate=0.5)
    study.tell(claim(study, SPACE, FIXED, "0").trial, state=TrialState.FAIL)
    with pytest.raises(SweepError, match=r"1 of 1 trained trials failed, over max_failure_rate=0.5"):
        claim(study, SPACE, FIXED, "0")
    study, claim = study_with(1, 2, 3), claim_step(n_trials=2, max_failure_rate=1.0)
    for _ in range(2):
        study.tell(claim(study, SPACE, FIXED, "0").trial, state=TrialState.FAIL)
    assert claim(study, SPACE, FIXED, "0").action == "done"


def test_the_failure_rate_counts_the_failures_of_trained_trials_only_and_stops_only_past_it():
    from sweeper.errors import SweepError

    study, claim = study_with(2, 1, 3, 0, 1, 3), claim_step(n_trials=4, max_failure_rate=0.5)

    def fail(attrs):
        trial = claim(study, SPACE, FIXED, "0").trial
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        study.tell(trial, state=TrialState.FAIL)

    train(study, claim(study, SPACE, FIXED, "0"))
    fail({"error": "boom"})  # its own failure
    fail({"lost_worker": True})  # its worker was killed: not the trial's fault
    fail({"interrupted": True})  # nor an interrupt
    study.tell(study.ask(SPACE), state=TrialState.FAIL)  # never launched
    again = claim(study, SPACE, FIXED, "0")  # 1 of 2 failed: at max_failure_rate=0.5, not over it
    assert again.action == "run" and again.trial.params == {"x": 3}
    again.trial.set_user_attr("error", "boom again")
    study.tell(again.trial, state=TrialState.FAIL)
    with pytest.raises(SweepError) as info:
        claim(study, SPACE, FIXED, "0")
    assert str(info.value) == "2 of 3 trained trials failed, over max_failure_rate=0.5 (last: trial 5: boom again)"


def test_n_trials_failures_end_the_sweep_with_one_warning_naming_the_last(caplog):
    study, claim = study_with(1, 2, 3), claim_step(n_trials=2, max_failure_rate=1.0)
    study.tell(claim(study, SPACE, FIXED, "0").trial, state=TrialState.FAIL)
    assert not caplog.records
    study.tell(claim(study, SPACE, FIXED, "0").trial, state=TrialState.FAIL)
    assert [claim(study, SPACE, FIXED, "0").action for _ in range(2)] == ["done", "done"]
    assert [r.getMessage() for r in caplog.records] == [
        "2 trained trials failed, as many as n_trials=2: the sweep ends (last: trial 1: no message)"]


# ------------------------------------------------------------------ the reporter


def reporter_on(study):
    trial = study.ask()
    reporter = TrialReporter(metric="test_acc")  # outside a sweep it finds no trial
    assert reporter.trial is None and reporter.on_epoch_end(1, {"test_acc": 1.0, "epochs": 3}) is False
    reporter.trial = SweepTrial(study, trial.number)
    return reporter, trial


def test_a_pruner_that_always_prunes_stops_the_trial_and_records_the_epoch():
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=1e9))
    reporter, trial = reporter_on(study)
    assert reporter.on_epoch_end(1, {"test_acc": 97.0, "epochs": 3}) is True
    frozen = study.trials[trial.number]
    assert frozen.user_attrs["pruned_at_step"] == 1 and frozen.intermediate_values == {1: 97.0}


def test_a_pruned_trial_says_when_and_at_what_value(caplog):
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=1e9))
    reporter, trial = reporter_on(study)
    with caplog.at_level("INFO", logger="sweeper.reporter"):
        assert reporter.on_epoch_end(2, {"test_acc": 97.125, "epochs": 3}) is True
    assert f"trial {trial.number} pruned after epoch 2 (test_acc 97.12)" in caplog.messages


def test_the_last_epoch_is_never_pruned():
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=1e9))
    reporter, trial = reporter_on(study)
    assert reporter.on_epoch_end(3, {"test_acc": 97.0, "epochs": 3}) is False
    frozen = study.trials[trial.number]
    assert "pruned_at_step" not in frozen.user_attrs and frozen.intermediate_values == {3: 97.0}


def test_a_multi_objective_study_is_never_pruned():
    study = optuna.create_study(directions=["maximize", "minimize"], pruner=optuna.pruners.ThresholdPruner(lower=1e9))
    reporter, trial = reporter_on(study)
    assert reporter.on_epoch_end(1, {"test_acc": 97.0, "epochs": 3}) is False
    frozen = study.trials[trial.number]
    assert frozen.user_attrs["curve"] == [97.0] and "pruned_at_step" not in frozen.user_attrs


def test_the_reporter_stores_every_scalar_result():
    study = optuna.create_study(direction="maximize")
    reporter, trial = reporter_on(study)
    reporter.on_epoch_end(1, {"test_acc": 97.0, "epochs": 1})
    reporter.on_train_end({"best_test_acc": 97.0, "n_params": 7988, "device": "cpu", "stop_reason": None,
                           "history": [{"test_acc": 97.0}], "nested": {"a": 1}})
    attrs = study.trials[trial.number].user_attrs
    assert {k: attrs[k] for k in ("best_test_acc", "n_params", "device", "stop_reason", "curve")} == {
        "best_test_acc": 97.0, "n_params": 7988, "device": "cpu", "stop_reason": None, "curve": [97.0]}
    assert "history" not in attrs and "nested" not in attrs
    assert "val_curve" not in attrs  # no validation split in any epoch: no validation curve


def test_a_run_resumed_after_its_last_epoch_still_stores_its_whole_curve():
    """A run stopped after its last epoch's checkpoint resumes with no epoch left: its trial's curve is the
    restored history's, stored at the end, and the validation curve beside it."""
    study = optuna.create_study(direction="maximize")
    reporter, trial = reporter_on(study)
    history = [{"test_acc": 97.0, "val_acc": 96.0}, {"test_acc": 98.0, "val_acc": 97.5}, {"test_acc": 98.5}]
    reporter.on_resumed(3, history)
    reporter.on_train_end({"best_test_acc": 98.5, "history": history})
    attrs = study.trials[trial.number].user_attrs
    assert attrs["curve"] == [97.0, 98.0, 98.5] and attrs["val_curve"] == [96.0, 97.5, None]
    assert TrialReporter().metric == "test_acc"  # what mnist_arch's trainer reports, the default
    with pytest.raises(KeyError, match=r"the epoch record has no 'test_acc'; it has: loss, acc"):
        reporter.on_epoch_end(4, {"loss": 0.1, "acc": 99.0})


def test_a_finished_trials_results_wait_out_a_brief_outage_and_name_the_trial_and_its_folder(tmp_path, caplog, monkeypatch):
    from sqlalchemy.exc import OperationalError

    study = optuna.create_study(direction="maximize")
    reporter, trial = reporter_on(study)
    stored, calls = reporter.trial._trial.set_user_attr, []

    def unreachable_once(key, value):
        calls.append(key)
        if len(calls) == 1:
            raise OperationalError("INSERT ...", {}, Exception("server closed the connection unexpectedly"))
        stored(key, value)

    monkeypatch.setattr(reporter.trial._trial, "set_user_attr", unreachable_once)
    with hydra_job(output_dir=tmp_path / "sweep" / "0"), caplog.at_level("WARNING", logger="sweeper.storage"):
        reporter.on_train_end({"best_test_acc": 98.5})
    assert f"storing the results of trial {trial.number}: database unreachable" in caplog.text
    attrs = study.trials[trial.number].user_attrs
    assert attrs["best_test_acc"] == 98.5 and attrs["output_dir"] == str(tmp_path / "sweep" / "0")


# ------------------------------------------------------------------ liveness


def running_trial(study, heartbeat_at=None):
    """A launched RUNNING trial; its last heartbeat at ``heartbeat_at`` seconds from now (None: none yet)."""
    trial = study.ask(SPACE)
    trial.set_user_attr("launched", True)
    if heartbeat_at is not None:
        study._storage.set_trial_system_attr(trial._trial_id, HEARTBEAT_ATTR, time.time() + heartbeat_at)
    return trial


needs_proc = pytest.mark.skipif(process_started(os.getpid()) is None,
                                reason="no /proc here: workers are judged by heartbeat alone")


@pytest.fixture
def hundred_seconds_later(monkeypatch):
    """The clock liveness reads, moved 100 s on: trials started now are 100 s old."""
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 100)


def test_a_stale_heartbeat_fails_the_trial_as_lost_and_a_fresh_one_is_left_alone(request, caplog):
    study = optuna.create_study(direction="maximize")
    stale, fresh = running_trial(study), running_trial(study, heartbeat_at=90)  # silent 100 s; beat 10 s ago
    request.getfixturevalue("hundred_seconds_later")
    assert fail_stale_trials(study, grace_period=60, retry=False) == [stale.number]
    (said,) = caplog.messages  # silent 100 s and the moments since, on a loaded machine perhaps a few
    assert re.fullmatch(rf"trial {stale.number}: no heartbeat for 10\ds; marked failed", said), said
    by_number = {t.number: t for t in study.trials}
    assert by_number[stale.number].state == TrialState.FAIL and by_number[stale.number].user_attrs[LOST_WORKER_ATTR]
    assert by_number[stale.number].user_attrs["error"] == "no heartbeat for over 60s: its worker was killed or lost"
    assert by_number[fresh.number].state == TrialState.RUNNING


def test_a_lost_trial_finished_by_another_worker_first_is_skipped_and_the_next_one_still_failed(monkeypatch, request):
    import sweeper.liveness as liveness

    study = optuna.create_study(direction="maximize")
    first, second = running_trial(study), running_trial(study)
    request.getfixturevalue("hundred_seconds_later")
    real = liveness.mark_failed

    def finished_meanwhile(study, trial, error, attrs=None):
        if trial.number == first.number:
            study.tell(trial.number, 0.5)  # its worker was slow, not lost, and told its value first
        return real(study, trial, error, attrs)

    monkeypatch.setattr(liveness, "mark_failed", finished_meanwhile)
    assert fail_stale_trials(study, grace_period=60, retry=True) == [second.number]
    assert [t.state for t in study.trials[:2]] == [TrialState.COMPLETE, TrialState.FAIL]
    assert [t.user_attrs["retry_of"] for t in study.trials if t.state == TrialState.WAITING] == [second.number]


def test_a_trial_silent_for_exactly_the_grace_period_is_still_alive(monkeypatch):
    study = optuna.create_study(direction="maximize")
    now = float(int(time.time())) + 1000
    at_edge, past = running_trial(study), running_trial(study)
    study._storage.set_trial_system_attr(at_edge._trial_id, HEARTBEAT_ATTR, now - 60)
    study._storage.set_trial_system_attr(past._trial_id, HEARTBEAT_ATTR, now - 60.5)
    monkeypatch.setattr(time, "time", lambda: now)
    assert fail_stale_trials(study, grace_period=60, retry=False) == [past.number]


@needs_proc
def test_a_worker_on_this_host_is_judged_by_its_process_not_its_heartbeat(request, caplog):
    """A live local worker is never failed for a late heartbeat (a loaded machine delays them behind
    SQLite's lock); a dead one is failed at once, whatever the grace period; another host's, by heartbeat."""
    import socket
    import subprocess
    import sys

    from sweeper.liveness import worker_marks

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    zombie = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    zombie.kill()  # killed, not yet reaped: /proc still lists it, as a zombie
    study = optuna.create_study(direction="maximize")
    alive, dead, reused, elsewhere, unreaped = (running_trial(study) for _ in range(5))  # no heartbeat at all
    marks = worker_marks()
    host = socket.gethostname()
    for trial, attrs in [(alive, marks), (dead, {"host_pid": f"{host}:{gone.pid}"}),
                         (unreaped, {"host_pid": f"{host}:{zombie.pid}"}),
                         (reused, {**marks, "worker_started": "1"}),  # this pid, but another process's start time
                         (elsewhere, {"host_pid": f"{host}-other:{os.getpid()}"})]:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
    deadline = time.monotonic() + 30
    while process_started(zombie.pid) is not None and time.monotonic() < deadline:  # SIGKILL lands
        time.sleep(0.05)
    assert fail_stale_trials(study, grace_period=600, retry=False) == [dead.number, reused.number, unreaped.number]
    zombie.wait()
    errors = {t.number: t.user_attrs.get("error") for t in study.trials}
    assert errors[dead.number] == f"its worker process ({host}:{gone.pid}) is gone: it was killed or lost"
    assert f"trial {dead.number}: {errors[dead.number]}; marked failed" in caplog.messages
    request.getfixturevalue("hundred_seconds_later")
    assert fail_stale_trials(study, grace_period=60, retry=False) == [elsewhere.number]  # silent 100 s, elsewhere
    assert study.trials[alive.number].state == TrialState.RUNNING  # silent 100 s too, but its process runs


@needs_proc
def test_a_worker_whose_name_holds_parentheses_and_spaces_is_read_from_after_its_name(tmp_path):
    """/proc/<pid>/stat puts the command name in parentheses, and a name may hold ") " itself: the start
    time is the 20th field after the name's last parenthesis."""
    import shutil
    import subprocess

    odd = tmp_path / "w) x ) y"
    shutil.copy(shutil.which("sleep"), odd)
    worker = subprocess.Popen([str(odd), "60"])
    try:
        stat = open(f"/proc/{worker.pid}/stat").read()
        assert "w) x ) y" in stat
        assert process_started(worker.pid) == stat[stat.rindex(")") + 1:].split()[19]
    finally:
        worker.kill()
        worker.wait()
    assert process_started(worker.pid) is None


@needs_proc
def test_a_claim_marks_its_host_pid_and_start_time_and_the_pid_is_read_after_the_hosts_last_colon(monkeypatch):
    import socket

    from sweeper.liveness import WORKER_STARTED_ATTR, local_worker_alive, worker_marks

    monkeypatch.setattr(socket, "gethostname", lambda: "pod:7")  # a name with a colon of its own
    marks = worker_marks()
    assert marks == {HOST_PID_ATTR: f"pod:7:{os.getpid()}", WORKER_STARTED_ATTR: process_started(os.getpid())}
    study = optuna.create_study(direction="maximize")
    trial = running_trial(study)
    for key, value in marks.items():
        trial.set_user_attr(key, value)
    assert local_worker_alive(study.trials[trial.number]) is True


def test_a_worker_this_host_cannot_tell_about_is_judged_by_heartbeat(monkeypatch):
    """None (unknowable), not False (gone): no pid after the host, or no /proc to look the process up in."""
    import socket

    import sweeper.liveness as liveness

    study = optuna.create_study(direction="maximize")
    trial = running_trial(study)
    trial.set_user_attr(HOST_PID_ATTR, f"{socket.gethostname()}:not-a-pid")
    assert liveness.local_worker_alive(study.trials[trial.number]) is None
    trial.set_user_attr(HOST_PID_ATTR, f"{socket.gethostname()}:{os.getpid()}")
    monkeypatch.setattr(liveness, "process_started", lambda pid: None)  # a host with no /proc
    assert liveness.local_worker_alive(study.trials[trial.number]) is None


@pytest.mark.parametrize("state, gone", [("Z", True), ("X", True), ("S", False), ("R", False), ("D", False)])
def test_a_zombie_or_dead_process_has_no_start_time(monkeypatch, state, gone):
    """Zombie (Z) and dead (X, seen only for an instant) are gone; sleeping, running or in I/O are alive."""
    import io

    import sweeper.liveness as liveness

    line = f"4242 (train) {state} 1 4242 4242 0 -1 4194304 " + " ".join(str(n) for n in range(10, 58))
    monkeypatch.setattr(liveness, "open", lambda path: io.StringIO(line), raising=False)
    assert liveness.process_started(4242) == (None if gone else "22")  # field 22: the start time


def test_retry_requeues_a_lost_trial_with_the_same_parameters(hundred_seconds_later, caplog):
    study = optuna.create_study(direction="maximize")
    lost = running_trial(study)
    with caplog.at_level("INFO", logger="sweeper.liveness"):
        assert fail_stale_trials(study, grace_period=60, retry=True) == [lost.number]
    assert caplog.messages[-1] == f"trial {lost.number} re-queued with the same parameters"  # nothing carried on
    queued = [t for t in study.trials if t.state == TrialState.WAITING]
    assert len(queued) == 1 and queued[0].system_attrs["fixed_params"] == lost.params
    assert queued[0].user_attrs["retry_of"] == lost.number
    notes = {r["trial"]: r["note"] for r in trial_rows(study)}
    assert notes[lost.number].endswith(f"was killed or lost; run again as trial {queued[0].number}")


def test_only_unlaunched_running_trials_are_failed_as_never_launched(caplog):
    study = optuna.create_study(direction="maximize")
    launched, orphan = running_trial(study), study.ask(SPACE)
    assert fail_unlaunched_trials(study) == [orphan.number]
    assert study.trials[launched.number].state == TrialState.RUNNING
    assert study.trials[orphan.number].user_attrs["error"] == NEVER_LAUNCHED
    assert caplog.messages == [f"trial {orphan.number} was claimed but never launched (database outage): marked failed"]
    assert fail_never_launched(study, study.trials[orphan.number]) is False  # finished (failed) first: said once
    assert len(caplog.messages) == 1


def test_trials_a_stopped_worker_left_running_are_recorded_interrupted_and_its_launched_one_runs_again(caplog):
    """After the sweep stopped its workers: the launched trial of worker 4242 and the one asked and never
    launched are recorded interrupted (the launched one queued to run first); others' trials run on."""
    import socket

    study = optuna.create_study(direction="maximize")
    mine, other, unlaunched = running_trial(study), running_trial(study), study.ask(SPACE)
    mine.set_user_attr(HOST_PID_ATTR, f"{socket.gethostname()}:4242")
    other.set_user_attr(HOST_PID_ATTR, f"{socket.gethostname()}:4243")  # another invocation's worker, alive or not
    assert sorted(settle_stopped_workers(study, [4242, 17])) == [mine.number, unlaunched.number]
    assert caplog.messages == [f"trial {mine.number}: its worker ({socket.gethostname()}:4242) ended without recording "
                               "the interrupt; recorded now"]
    t = study.trials
    assert [t[n].state for n in (mine.number, other.number, unlaunched.number)] == [
        TrialState.FAIL, TrialState.RUNNING, TrialState.FAIL]
    assert t[mine.number].user_attrs["error"] == "interrupted" and t[mine.number].user_attrs["interrupted"] is True
    assert t[unlaunched.number].user_attrs["interrupted"] is True
    assert t[unlaunched.number].user_attrs["error"] == "interrupted"
    queued = [q for q in t if q.state == TrialState.WAITING]  # the launched one only: the other never trained
    assert [(q.user_attrs["retry_of"], q.system_attrs["fixed_params"]) for q in queued] == [(mine.number, t[mine.number].params)]
    assert settle_stopped_workers(study, [4242]) == []  # recorded once


# ------------------------------------------------------------------ masking


@pytest.mark.parametrize("url, shown", [
    ("postgresql://u:s3cret@db:5432/sweeps", "postgresql://u:***@db:5432/sweeps"),
    ("postgresql://u@db/sweeps?password=s3cret", "postgresql://u@db/sweeps?password=***"),
    ("postgresql://u@db/sweeps?sslmode=require&password=s3cret&a=b", "postgresql://u@db/sweeps?a=b&password=***&sslmode=require"),
    ("mysql+pymysql://u:s3cret@db/sweeps", "mysql+pymysql://u:***@db/sweeps"),
    ("not a url u:s3cret@x", "not a url u:s3cret@x"),  # no // : nothing that reads as a password
    ("weird://u:s3cret@@h", "weird://u:***@@h"),
    ("sqlite:///outputs/sweeps.db", "sqlite:///outputs/sweeps.db"),
    ("journal:///tmp/sweeps.log", "journal:///tmp/sweeps.log"),
    (None, "in-memory"),
])
def test_masking_hides_every_form_of_password(url, shown):
    assert masked(url) == shown
    if url and "//" in url:
        assert ("s3cret" in url) == has_password(url)
        assert "s3cret" not in masked(url)
    if url and "s3cret" in url and "//" in url:
        assert scrubbed(f"driver said: auth failed for s3cret at {url}", url).count("s3cret") == 0


def test_a_choices_options_cannot_change_within_a_study_even_when_changes_are_allowed():
    from optuna.distributions import CategoricalDistribution

    from sweeper.storage import StorageError, check_search_space

    study = optuna.create_study(study_name="s")
    check_search_space(study, {"x": CategoricalDistribution([5])}, allow_change=True)
    check_search_space(study, {"x": CategoricalDistribution([5]), "y": IntDistribution(0, 3)}, allow_change=True)
    with pytest.raises(StorageError, match=r"study 's' chose x from choice\(5\); Optuna cannot change a choice's "
                                           r"options within a study \(here choice\(0,1\)\)"):
        check_search_space(study, {"x": CategoricalDistribution([0, 1])}, allow_change=True)


def test_a_discrete_space_counts_only_its_own_points_as_trained():
    study, claim = study_with(2, 0, 1), claim_step(n_trials=10, space_size=2)
    wide = {"x": IntDistribution(0, 9)}
    train(study, claim(study, wide, FIXED, "0"))  # x=2: trained under a wider space, before a change
    narrow = {"x": IntDistribution(0, 1)}
    train(study, claim(study, narrow, FIXED, "0"))
    assert claim(study, narrow, FIXED, "0").action == "run"  # x=1 is still to train


def test_a_discrete_space_ends_when_its_points_are_trained_or_found_over_budget():
    study, claim = study_with(0, 5, 1, 5, 6), claim_step(n_trials=10, space_size=4)
    # space_size=4 stands for a 4-point space: 0 and 1 train, 5 and 6 are over budget (x**2 > 9)
    assert claim_until_done(study, claim) == ["run", "skip", "run", "skip", "skip", "done"]  # 5 twice, 6: over budget; then all 4 are tried


def test_a_discrete_space_all_over_budget_is_refused_once_each_point_is_found_so():
    from sweeper.errors import SweepError

    study, claim = study_with(5, 6), claim_step(n_trials=10, space_size=2)
    assert [claim(study, SPACE, FIXED, "0").action for _ in range(2)] == ["skip", "skip"]
    with pytest.raises(SweepError, match="every one of the search space's 2 points is over budget or unbuildable"):
        claim(study, SPACE, FIXED, "0")


def test_repeated_trials_attributes_are_aggregated_as_the_objective_and_counts_stay_counts():
    from optuna.trial import create_trial

    from sweeper.table import metric_attrs

    repeats = [{"best_epoch": 19, "n_params": 3955, "best_test_acc": 99.38}, {"best_epoch": 17, "n_params": 3955,
                                                                              "best_test_acc": 99.30}]
    mean = create_trial(value=1.0, user_attrs={"repeat_attrs": repeats})  # no aggregate stored: mean
    assert metric_attrs(mean)["best_epoch"] == 18 and isinstance(metric_attrs(mean)["best_epoch"], int)
    assert metric_attrs(mean)["n_params"] == 3955 and isinstance(metric_attrs(mean)["n_params"], int)
    assert metric_attrs(mean)["best_test_acc"] == pytest.approx(99.34)
    odd = create_trial(value=1.0, user_attrs={"repeat_attrs": [{"best_epoch": 19}, {"best_epoch": 18}]})
    assert metric_attrs(odd)["best_epoch"] == 18.5
    worst = create_trial(value=1.0, user_attrs={"repeat_attrs": repeats, "repeats_aggregate": "min"})
    assert metric_attrs(worst)["best_test_acc"] == 99.30 and metric_attrs(worst)["best_epoch"] == 17


@pytest.mark.parametrize("returned", [(1.0, float("nan")), (float("nan"), 1.0), (1.0, float("inf")),
                                      (float("-inf"), 2.0), {"a": 1.0, "b": float("nan")}])
def test_every_objective_of_a_multi_objective_job_must_be_finite(returned):
    from hydra.core.utils import JobReturn, JobStatus

    from sweeper.outcome import job_outcome

    ret = JobReturn(status=JobStatus.COMPLETED, _return_value=returned)
    state, values, error = job_outcome(ret, {}, ["a", "b"], 2)
    assert (state, values) == (TrialState.FAIL, None)
    assert error.startswith("objective is not finite")
    fine = JobReturn(status=JobStatus.COMPLETED, _return_value=(1.0, 2.0))
    assert job_outcome(fine, {}, ["a", "b"], 2) == (TrialState.COMPLETE, [1.0, 2.0], None)


@pytest.mark.parametrize("as_config", [False, True])
def test_the_numbers_a_job_returned_by_name_are_kept_those_named_in_metrics_where_given(as_config):
    """A dict or a DictConfig (an app returning part of its config); booleans and text are not metrics."""
    from sweeper.outcome import returned_metrics

    returned = {"acc": 99.1, "n_params": 4938, "held": True, "device": "cpu", "nested": {"x": 1}, "ref": "${acc}"}
    returned = OmegaConf.create(returned) if as_config else returned
    every = {"acc": 99.1, "n_params": 4938}
    assert returned_metrics(returned, None) == ({**every, "ref": 99.1} if as_config else every)  # resolved
    assert returned_metrics(returned, ["n_params", "held", "absent"]) == {"n_params": 4938}
    assert returned_metrics(0.5, None) == {} and returned_metrics([1.0, 2.0], None) == {}


def test_each_parallel_trial_gets_its_thread_share_where_the_app_named_a_key():
    from sweeper.workers import job_overrides, job_threads

    share = job_threads(None, 2)
    assert share == max(1, (os.cpu_count() or 1) // 2)
    assert job_threads(1, 8) == 1 and job_threads(6, 2) == 6  # as configured, whatever the cores
    assert job_overrides(["x=1"], "trainer.threads", None, 2) == ["x=1", f"++trainer.threads={share}"]
    assert job_overrides(["x=1"], "trainer.threads", 3, 2) == ["x=1", "++trainer.threads=3"]
    assert job_overrides(["x=1", "trainer.threads=4"], "trainer.threads", 1, 2) == ["x=1", "trainer.threads=4"]  # the user's
    assert job_overrides(["x=1"], None, 1, 2) == ["x=1"]  # an app that named no key is left as it is
    for users in ("+trainer.threads=4", "++trainer.threads=4", "~trainer.threads"):  # added, forced or removed: theirs
        assert job_overrides(["x=1", users], "trainer.threads", 1, 2) == ["x=1", users]


@pytest.mark.parametrize("cores, n_jobs, share", [(5, 2, 2), (5, 1, 5), (1, 4, 1), (None, 1, 1), (None, 3, 1)])
def test_a_jobs_thread_share_is_a_whole_number_of_the_cores_and_one_where_they_are_unknown(monkeypatch, cores, n_jobs, share):
    from sweeper.workers import job_overrides, job_threads

    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    assert job_threads(None, n_jobs) == share and type(job_threads(None, n_jobs)) is int
    assert job_overrides([], "threads", None, n_jobs) == [f"++threads={share}"]  # "2.5" would fail the job's int key


def test_a_job_waits_for_an_unreachable_database_as_long_as_the_sweep_says_not_longer(tmp_path):
    from sweeper.api import ACTIVE_STUDIES, current_trial
    from sweeper.storage import StorageError, open_storage

    url = f"sqlite:///{tmp_path}/sweeps.db"
    study = optuna.create_study(study_name="toy", storage=open_storage(url), direction="maximize")
    study.ask()
    ACTIVE_STUDIES[(url, "toy")] = study  # the sweeper's own study, as an in-process job finds it
    try:
        with hydra_job([f"hydra.sweeper.storage={url}", "hydra.sweeper.storage_patience=1"], num=0) as cfg:
            assert cfg.hydra.sweeper._target_ == sweeper.config.SWEEPER_TARGET
            assert current_trial().number == 0
            (tmp_path / "sweeps.db").rename(tmp_path / "away.db")  # the database goes away as the next job starts
            (tmp_path / "sweeps.db").mkdir()
            study._storage._backend.engine.dispose()  # no pooled connection to the old file
            started = time.monotonic()
            with pytest.raises(StorageError, match="trial 0: the database has been unreachable for [0-9]s"):
                current_trial()
            assert time.monotonic() - started < 30  # storage_patience=1 (retries at 0.5 s and 1 s), not a fixed 300 s
    finally:
        ACTIVE_STUDIES.pop((url, "toy"), None)


@pytest.mark.parametrize("choice, repeats, pruner", [
    ("none", 1, optuna.pruners.NopPruner), ("percentile", 1, optuna.pruners.PercentilePruner),
    ("median", 3, FirstRepeatsPruner),  # with repeats, as the sweeper's own
])
def test_a_job_in_another_process_prunes_with_the_sweeps_pruner(tmp_path, choice, repeats, pruner):
    """A launcher that runs jobs in their own processes (submitit, joblib) opens the study anew; its
    reports must be judged by hydra.sweeper.pruner, not by Optuna's default MedianPruner."""
    from sweeper.api import current_trial

    url = f"sqlite:///{tmp_path}/sweeps.db"
    study = optuna.create_study(study_name="toy", storage=url, direction="maximize")
    for x in (1.0, 2.0, 3.0, 4.0, 5.0):  # five complete trials, each reporting x at step 1: a median of 3
        trial = study.ask()
        trial.report(x, 1)
        study.tell(trial, x)
    study.ask()
    warmup = ["hydra.sweeper.pruner.n_warmup_steps=0"] if choice != "none" else []
    with hydra_job([f"hydra.sweeper.storage={url}", f"hydra/sweeper/pruner={choice}", *warmup,
                    f"hydra.sweeper.repeats.n={repeats}"], num=5) as cfg:
        job = current_trial()  # nothing in this process: opened from the storage, as in a job's own process
        assert type(job._study.pruner) is pruner
        if choice == "percentile":
            assert job._study.pruner._percentile == cfg.hydra.sweeper.pruner.percentile
        assert job.report(0.5, 1) is (choice != "none")  # far below every other trial's step 1


def test_recording_an_interrupt_ignores_a_second_signal_then_gives_the_handlers_back():
    """While an interrupt is recorded a second Ctrl-C or SIGTERM does nothing; after it the process has its
    own handlers again (a program that ran the sweep in-process keeps Ctrl-C; its later children can be
    stopped by SIGTERM)."""

    from sweeper.interrupts import interrupts_ignored

    def mine(signum, frame):
        raise AssertionError("not while the interrupt is recorded")

    previous = signal.signal(signal.SIGTERM, mine)
    inherited = signal.getsignal(signal.SIGINT)  # Python's handler, or ignored in a background job
    try:
        with pytest.raises(SystemExit):
            with interrupts_ignored():
                os.kill(os.getpid(), signal.SIGTERM)
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)  # delivered and dropped: nothing raised here
                assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
                raise SystemExit(143)
        assert signal.getsignal(signal.SIGTERM) is mine
        assert signal.getsignal(signal.SIGINT) is inherited
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_stopping_workers_sends_the_signal_again_to_one_that_could_not_take_it_yet():
    """A worker that lets the first SIGTERM pass (its handler not yet in place) is stopped by the next
    one, a second later, not killed after the minute's wait: it records its trial (exit 143)."""
    import subprocess
    import sys

    from sweeper.workers import stop_workers

    code = ("import signal, sys, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(0.5)\n"
            "signal.signal(signal.SIGTERM, lambda *a: sys.exit(143)); time.sleep(60)\n")
    late = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    quick = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert late.stdout.readline() == "ready\n"
    started = time.monotonic()
    codes = stop_workers([late, quick])
    assert codes[0] == 143 and codes[1] != -9  # each ended by SIGTERM, none killed
    assert time.monotonic() - started < 30  # the minute's wait and the kill were not needed


# ------------------------------------------------------------------ a failed job's traceback, and the sampler's parts


def test_a_jobs_traceback_is_written_whole_into_a_folder_made_for_it_and_kept_on_the_trial_where_it_cannot_be(tmp_path):
    import traceback

    from sweeper.tracebacks import ERROR_LOG, keep, kept, tail

    def fail():
        raise ValueError("bad width X")

    try:
        fail()
    except ValueError as exc:
        caught = exc
    whole = "".join(traceback.format_exception(type(caught), caught, caught.__traceback__))
    assert whole.startswith("Traceback (most recent call last):\n") and whole.endswith("ValueError: bad width X\n")
    folder = tmp_path / "sweep" / "3"  # neither it nor its parent exists yet
    with hydra_job(output_dir=folder):
        keep(caught, caught.__traceback__)
    assert kept(caught) == (whole, str(folder / ERROR_LOG)) and (folder / ERROR_LOG).read_text() == whole
    (tmp_path / "a_file").write_text("")
    with hydra_job(output_dir=tmp_path / "a_file" / "3"):  # a folder that cannot be made: the text is still kept
        second = RuntimeError("again")
        keep(second, None)
    assert kept(second) == ("RuntimeError: again\n", None)
    assert tail(whole) == "\n".join(whole.splitlines()[-15:]) and tail(whole, 1) == "ValueError: bad width X"
    assert tail("a\nb\nc\n\n\n", 2) == "b\nc"  # trailing blank lines are not lines of the traceback
    assert tail("x\nError: ends in spaces  \n", 1) == "Error: ends in spaces  "


def test_motpe_is_tpe_with_the_official_configs_candidates_and_every_other_keyword_passed_on():
    from sweeper.samplers import motpe

    assert motpe()._n_ei_candidates == 24  # hydra-optuna-sweeper's motpe.yaml: n_ehvi_candidates: 24
    sampler = motpe(n_ehvi_candidates=8, n_startup_trials=3, seed=5)
    assert type(sampler) is optuna.samplers.TPESampler and sampler._n_ei_candidates == 8
    assert sampler._n_startup_trials == 3


def test_a_module_is_importable_when_found_or_imported_and_not_when_its_import_is_known_to_fail(tmp_path, monkeypatch):
    from sweeper.samplers import _importable

    (tmp_path / "never_imported_here.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "never_imported_here" not in sys.modules and _importable("never_imported_here")
    assert _importable("json") and not _importable("no_such_module_anywhere")
    monkeypatch.setitem(sys.modules, "never_imported_here", None)  # how a failed import is remembered
    assert not _importable("never_imported_here")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's prctl")
def test_a_worker_ignores_ctrl_c_and_is_sent_sigterm_when_the_process_that_started_it_dies():
    """What start_workers runs in each worker before its command (preexec_fn), run here and undone."""
    import ctypes

    from sweeper.workers import _end_with_parent

    libc, asked = ctypes.CDLL("libc.so.6", use_errno=True), ctypes.c_int()
    handler = signal.getsignal(signal.SIGINT)
    libc.prctl(2, ctypes.byref(asked))  # PR_GET_PDEATHSIG
    before = asked.value
    try:
        _end_with_parent()
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN  # Ctrl-C is the starting process's to handle
        libc.prctl(2, ctypes.byref(asked))
        assert asked.value == signal.SIGTERM  # never orphaned: recorded as interrupted when its parent dies
    finally:
        signal.signal(signal.SIGINT, handler)
        libc.prctl(1, before)


@dataclasses.dataclass
class TypedTrainer:
    epochs: int = 20


@dataclasses.dataclass
class Typed:
    trainer: TypedTrainer = dataclasses.field(default_factory=TypedTrainer)


def raised_from(outer: BaseException, cause: BaseException) -> BaseException:
    """``outer`` as ``raise outer from cause`` leaves it, raised while ``cause`` was handled."""
    try:
        try:
            raise cause
        except BaseException as exc:
            raise outer from exc
    except BaseException as raised:
        return raised


def test_an_error_is_one_line_without_hydras_search_path_or_its_instantiation_wrapper():
    from hydra.errors import InstantiationException

    from sweeper.errors import SweepError, one_line

    with pytest.raises(Exception) as info:
        load_toy(["optimizer=nope"])
    assert "Config search path:" in str(info.value)  # Hydra's message: the options, then where it looked
    assert one_line(info.value) == "In 'toy': Could not find 'optimizer/nope'; Available options in 'optimizer': adam, sgd"
    with pytest.raises(Exception) as info:
        load_toy(["x=[1,"])
    assert "See https://hydra.cc" in str(info.value)  # the grammar's link: noise on one line
    assert one_line(info.value) == "no viable alternative at input '[1,'"
    typed = OmegaConf.structured(Typed)
    with pytest.raises(Exception) as info:
        typed.trainer.epochs = "many"
    for where in ("full_key: trainer.epochs", "reference_type=TypedTrainer", "object_type=TypedTrainer"):
        assert where in str(info.value)  # OmegaConf's lines on where the value was: noise on one line
    assert one_line(info.value) == "Value 'many' of type 'str' could not be converted to Integer"
    wrapped = raised_from(InstantiationException("Error in call to target 'sweeper.x':\nSweepError(...)\nfull_key: "
                                                 "hydra.sweeper"), SweepError("hydra.sweeper.repeats.n=0 must be at least 1"))
    assert one_line(wrapped) == "hydra.sweeper.repeats.n=0 must be at least 1"
    # only that pair is unwrapped: the app's own error inside Hydra's wrapper, and the sweeper's error as the
    # cause of another, are said as raised
    wrapped = raised_from(InstantiationException("Error in call to target 'app.Net':\nValueError('width must be "
                                                 "positive')"), ValueError("width must be positive"))
    assert one_line(wrapped) == "Error in call to target 'app.Net': ValueError('width must be positive')"
    assert one_line(InstantiationException("Error locating target 'app.Nope'")) == "Error locating target 'app.Nope'"
    outer = raised_from(RuntimeError("the sweep stopped"), SweepError("hydra.sweeper.repeats.n=0 must be at least 1"))
    assert one_line(outer) == "the sweep stopped"


def test_one_line_folds_the_options_after_their_heading_and_adds_an_omegaconf_cause_once():
    from omegaconf.errors import ConfigKeyError

    from sweeper.errors import one_line

    said = ValueError("Could not override 'optimizer'.\nNo match in the defaults list.\n"
                      "Available options in 'optimizer':\n\tadam\n\tsgd\nPick one of them.")
    assert one_line(said) == ("Could not override 'optimizer'.; No match in the defaults list.; "
                              "Available options in 'optimizer': adam, sgd; Pick one of them.")
    assert one_line(ValueError()) == "ValueError" and one_line(ValueError("\n \n")) == "ValueError"  # nothing to say
    for cause, line in [(ConfigKeyError("Key 'lr' is not in struct\n    full_key: optim.lr"),
                         "cannot set optim.lr; Key 'lr' is not in struct"),
                        (ConfigKeyError(""), "cannot set optim.lr"),  # a cause with nothing to add
                        (ConfigKeyError("cannot set optim.lr"), "cannot set optim.lr")]:  # nor one said already
        try:
            raise ValueError("cannot set optim.lr") from cause
        except ValueError as exc:
            assert one_line(exc) == line


def test_a_misspelt_sweeper_key_is_found_through_the_chain_and_another_configs_key_is_left_to_hydra():
    from omegaconf.errors import ConfigKeyError

    from sweeper.errors import SweepError, sweeper_error_line

    def raised(inner, outer="Error merging override"):
        try:
            try:
                raise inner
            except Exception:
                raise ValueError(outer)  # implicitly chained, as Hydra's composition re-raises
        except ValueError as exc:
            return exc

    assert sweeper_error_line(raised(SweepError("hydra.sweeper.n_jobs=0 must be at least 1"))) == (
        "hydra.sweeper.n_jobs=0 must be at least 1")
    typo = "Key 'n_trail' not in 'OptunaBudgetSweeperConf'"
    said = "hydra.sweeper.n_trail: no such setting; did you mean hydra.sweeper.n_trials?"
    assert sweeper_error_line(raised(ConfigKeyError(f"{typo}\n    full_key: hydra.sweeper.n_trail"))) == said
    assert sweeper_error_line(raised(ConfigKeyError(typo))) == said  # no full_key line: the sweeper's own level
    assert sweeper_error_line(raised(ConfigKeyError("Key 'sed' not in 'RandomSamplerConf'\n    full_key: hydra.sweeper.sampler.sed"))) == (
        "hydra.sweeper.sampler.sed: no such setting; did you mean hydra.sweeper.sampler.seed?")
    for schema in ("TrainConf", "ConfigStore"):  # the app's own schema, though one is named like a class the sweeper imports
        assert sweeper_error_line(raised(ConfigKeyError(f"Key 'lrr' not in '{schema}'\n    full_key: optim.lrr"))) is None
    from sweeper.config import SWEEPER_TARGET

    unexpected = TypeError("__init__() got an unexpected keyword argument 'n_trail'")
    assert sweeper_error_line(raised(unexpected, f"Error in call to target '{SWEEPER_TARGET}'")) == said
    assert sweeper_error_line(raised(unexpected, "Error in call to target 'app.Model'")) is None  # the app's own class


def test_squashed_folds_white_space_and_cuts_only_where_asked():
    from sweeper.errors import squashed

    said = OSError("disk I/O error\n\t(sqlite3.OperationalError)   near the end")
    assert squashed(said) == "disk I/O error (sqlite3.OperationalError) near the end"
    assert squashed(said, 14) == "disk I/O error" and squashed("short", 200) == "short"


def test_the_one_line_report_wraps_hydras_once_and_nothing_where_hydra_has_none(monkeypatch, capsys):
    import hydra._internal.utils as hydra_internal

    from sweeper.errors import SweepError, report_sweeper_errors_in_one_line

    def plain(func):
        return func()

    monkeypatch.setattr(hydra_internal, "run_and_report", plain)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)  # set, it asks for Hydra's traceback instead
    report_sweeper_errors_in_one_line()
    wrapped = hydra_internal.run_and_report
    assert wrapped is not plain and wrapped.reports_sweeper_errors and wrapped(lambda: 7) == 7
    report_sweeper_errors_in_one_line()  # every Hydra app's start calls it: wrapped once
    assert hydra_internal.run_and_report is wrapped
    for said, printed in (("n_trials=0 is out of range", "Error: n_trials=0 is out of range\n"),
                          ("Error locating target 'x.Y'", "Error locating target 'x.Y'\n")):  # not "Error: Error"
        def sweep(said=said):
            raise SweepError(said)

        with pytest.raises(SystemExit) as info:
            wrapped(sweep)
        assert info.value.code == 1 and capsys.readouterr().err == printed
    monkeypatch.delattr(hydra_internal, "run_and_report")
    report_sweeper_errors_in_one_line()  # a Hydra without the function: nothing to wrap, no error
    assert not hasattr(hydra_internal, "run_and_report")


def test_a_command_fails_with_its_name_the_message_and_status_1(capsys):
    from sweeper.errors import fail

    with pytest.raises(SystemExit) as info:
        fail("sweep-results", "no study named 'x'")
    assert info.value.code == 1 and capsys.readouterr().err == "sweep-results: no study named 'x'\n"


def test_an_interrupt_is_named_by_its_signal():

    from sweeper.interrupts import Interrupted

    stop = Interrupted(signal.SIGTERM)
    assert str(stop) == "SIGTERM" and stop.signum == signal.SIGTERM and str(Interrupted(signal.SIGHUP)) == "SIGHUP"


@pytest.mark.parametrize("noted, raised", [([signal.SIGINT], KeyboardInterrupt), ([signal.SIGTERM], "SIGTERM"),
                                            ([signal.SIGTERM, signal.SIGHUP, signal.SIGINT], KeyboardInterrupt),
                                            ([signal.SIGINT, signal.SIGHUP, signal.SIGTERM], "SIGTERM")])
def test_a_safe_point_raises_the_last_signal_noted_ctrl_c_as_keyboard_interrupt(monkeypatch, noted, raised):
    from sweeper import interrupts

    interrupts.check_interrupt()  # nothing noted: nothing raised
    monkeypatch.setattr(interrupts, "_noted", list(noted))
    with pytest.raises(BaseException) as info:
        interrupts.check_interrupt()
    if raised is KeyboardInterrupt:
        assert type(info.value) is KeyboardInterrupt
    else:
        assert type(info.value) is interrupts.Interrupted and str(info.value) == raised


def test_a_signal_acts_at_once_only_inside_the_job_and_outside_its_database_calls():
    from sweeper import interrupts

    with interrupts.interruptible():
        os.kill(os.getpid(), signal.SIGTERM)  # claiming, telling: noted, raised at the next safe point
        with pytest.raises(interrupts.Interrupted):
            interrupts.check_interrupt()
    with interrupts.interruptible():
        with pytest.raises(interrupts.Interrupted):
            with interrupts.job_running():
                os.kill(os.getpid(), signal.SIGTERM)  # the app's code: at once
                time.sleep(5)
    with interrupts.interruptible():
        with pytest.raises(interrupts.Interrupted):
            with interrupts.job_running():
                with interrupts.database_call():
                    os.kill(os.getpid(), signal.SIGTERM)  # the job's own database call finishes first
                    time.sleep(0.01)
                    finished = True
                    assert interrupts._noted == [signal.SIGTERM]
        assert finished


def test_an_exception_that_takes_no_attributes_is_failed_all_the_same():
    """Frozen exception types (a frozen dataclass: AttributeError; pydantic's v1 models: TypeError)."""
    from sweeper.tracebacks import keep, kept

    @dataclasses.dataclass(frozen=True)
    class FrozenError(Exception):
        what: str

    class ImmutableError(Exception):
        def __setattr__(self, name, value):
            raise TypeError(f'"{type(self).__name__}" is immutable and does not support item assignment')

    for exc in (FrozenError("bad"), ImmutableError("bad")):
        keep(exc, None)  # no error of its own: the job's failure is still the exception raised
        assert kept(exc) == (None, None)


def test_a_callable_named_with_a_leading_dot_is_found_beside_the_apps_script(tmp_path, monkeypatch):
    import importlib.util
    import types

    from sweeper.locate import locate_callable

    (tmp_path / "my_app.py").write_text("def task(cfg):\n    return 0\n\ndef measure(cfg):\n    return 'from the file'\n")
    (tmp_path / "helpers" / "budget").mkdir(parents=True)
    (tmp_path / "helpers" / "budget" / "params.py").write_text("def count(cfg):\n    return 7\n")
    spec = importlib.util.spec_from_file_location("my_app", tmp_path / "my_app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    assert locate_callable(".helpers.budget.params.count", app.task)(None) == 7  # a module in a folder beside it
    assert locate_callable("json.dumps", app.task) is __import__("json").dumps  # no dot: a dotted import path
    running = types.ModuleType("__main__")  # the app's script, run as `python my_app.py`
    running.__file__ = str(tmp_path / "my_app.py")
    running.measure = lambda cfg: "the running script's"
    monkeypatch.setitem(sys.modules, "__main__", running)
    assert locate_callable(".my_app.measure", app.task)(None) == "the running script's"  # not run a second time
    (tmp_path / "my-helpers.py").write_text("def fn(cfg):\n    return __name__\n")
    assert locate_callable(".my-helpers.fn", app.task)(None) == "my_helpers"  # a file name no import could spell
    with pytest.raises(ImportError, match="no file .*missing.py"):
        locate_callable(".missing.fn", app.task)


def test_a_worker_that_ignores_sigterm_is_killed_once_the_time_to_stop_is_up():
    import subprocess
    import threading

    from sweeper.workers import stop_workers

    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, sys, time\n"
                                 "signal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\ntime.sleep(120)"],
                                stdout=subprocess.PIPE, text=True)
    polite = subprocess.Popen([sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(120)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert stubborn.stdout.readline() == "ready\n" and polite.stdout.readline() == "ready\n"
        codes = []
        stopping = threading.Thread(target=lambda: codes.extend(stop_workers([stubborn, polite], timeout=1.0, every=0.2)))
        started = time.monotonic()
        stopping.start()
        stopping.join(60)
        assert not stopping.is_alive(), "stop_workers never gave up on a worker that ignores SIGTERM"
        assert codes == [-9, -15] and time.monotonic() - started >= 1.0  # SIGKILL past the timeout; SIGTERM at once
    finally:
        for proc in (stubborn, polite):
            proc.kill()
            proc.wait()
            proc.stdout.close()


def test_the_gpus_counted_are_those_the_apps_torch_sees_and_none_without_torch(monkeypatch):
    """No GPU is lent to this suite: the loaded torch is stood in for by one that sees two, and one that fails."""
    import types

    from sweeper.workers import gpu_count

    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert gpu_count() == 0  # the app never imported torch: it does not use it
    seeing = types.SimpleNamespace(cuda=types.SimpleNamespace(device_count=lambda: 2))
    monkeypatch.setitem(sys.modules, "torch", seeing)
    assert gpu_count() == 2

    def broken():
        raise RuntimeError("CUDA driver initialization failed")

    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=types.SimpleNamespace(device_count=broken)))
    assert gpu_count() == 0


def no_gpu_set(monkeypatch):
    """CUDA_VISIBLE_DEVICES unset for the test and as it was after it (start_workers sets it in this process)."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # records how it was, so that the teardown puts it back
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's prctl")
def test_n_jobs_starts_n_jobs_minus_one_workers_each_this_command_again_with_its_index(monkeypatch, capfd):

    from sweeper.workers import WORKER_ENV, start_workers

    monkeypatch.delitem(sys.modules, "torch", raising=False)  # the app never imported it: no GPU to share out
    no_gpu_set(monkeypatch)
    monkeypatch.setattr(sys, "orig_argv", [sys.executable, "-c", "import ctypes, os, signal, sys\n"
                                           "dies_with = ctypes.c_int()\n"
                                           "ctypes.CDLL('libc.so.6').prctl(2, ctypes.byref(dies_with))\n"
                                           f"print(os.environ[{WORKER_ENV!r}], os.environ.get('CUDA_VISIBLE_DEVICES'), "
                                           "sys.argv[1:], signal.getsignal(signal.SIGINT) is signal.SIG_IGN, dies_with.value)"])
    assert start_workers(1, "sweep") == []  # one job: this process is the only worker
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)  # not inherited ignored (a runner may ignore it)
    try:
        procs = start_workers(3, "/tmp/the_sweep")
    finally:
        signal.signal(signal.SIGINT, handler)
    assert [proc.wait() for proc in procs] == [0, 0]
    assert sorted(capfd.readouterr().out.splitlines()) == [  # Ctrl-C is for the process the user started; SIGTERM
        "1 None ['hydra.sweep.dir=/tmp/the_sweep'] True 15", "2 None ['hydra.sweep.dir=/tmp/the_sweep'] True 15"]


def test_a_process_is_a_worker_only_where_a_sweep_started_it_so(monkeypatch):
    from sweeper.workers import WORKER_ENV, worker_index

    monkeypatch.delenv(WORKER_ENV, raising=False)
    assert worker_index() is None  # the process the user started
    monkeypatch.setenv(WORKER_ENV, "2")
    assert worker_index() == 2


@pytest.mark.parametrize("gpus, seen", [(1, ["1 None", "2 None", "3 None"]), (2, ["1 1", "2 0", "3 1"]),
                                        (3, ["1 1", "2 2", "3 0"])])
def test_with_several_gpus_each_worker_and_this_process_get_one_of_their_own(monkeypatch, capfd, gpus, seen):
    """No GPU is lent to this suite: the app's torch is stood in for by one that sees ``gpus``."""
    import os
    import types

    from sweeper.workers import WORKER_ENV, start_workers

    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=types.SimpleNamespace(device_count=lambda: gpus)))
    no_gpu_set(monkeypatch)
    monkeypatch.setattr(sys, "orig_argv", [sys.executable, "-c", "import os\n"
                                           f"print(os.environ[{WORKER_ENV!r}], os.environ.get('CUDA_VISIBLE_DEVICES'))"])
    assert [proc.wait() for proc in start_workers(4, "sweep")] == [0, 0, 0]
    assert sorted(capfd.readouterr().out.splitlines()) == seen
    assert os.environ.get("CUDA_VISIBLE_DEVICES") == (None if gpus == 1 else "0")  # this process: the first GPU
