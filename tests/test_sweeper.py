"""The sweeper through the real command line: each test runs sweeps in subprocesses on a SQLite file.

Real models on small subsets where the trainer matters (budget, pruning, result attributes);
the cheap task in tests/toy_app where only the sweep's machinery does (failures, kills, workers).
"""

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.trial import TrialState

from sweeper.storage import open_storage

from .support import REPO, run_cli

pytestmark = pytest.mark.slow
optuna.logging.set_verbosity(optuna.logging.WARNING)

SMALL_REAL = ["model=tiny", "data.train_subset=1000", "data.test_subset=500", "optim=adam", "schedule=none",
              "hydra/sweeper=optuna_budget"]


STORAGES = {"sqlite": "sqlite:///{}/sweeps.db", "journal": "journal:///{}/sweeps.log"}


def storage_args(tmp_path, study="test", kind="sqlite"):
    return [f"hydra.sweeper.storage={STORAGES[kind].format(tmp_path)}", f"hydra.sweeper.study_name={study}",
            f"hydra.sweep.dir={tmp_path}/sweep"]


def load(tmp_path, study="test", kind="sqlite"):
    return optuna.load_study(study_name=study, storage=open_storage(STORAGES[kind].format(tmp_path)))


def by_kind(study):
    kinds = {}
    for t in study.get_trials():
        kind = "rejected" if t.user_attrs.get("rejected") else t.state.name.lower()
        kinds.setdefault(kind, []).append(t)
    return kinds


def toy(tmp_path, *args, study="toy", kind="sqlite"):
    return ["tests.toy_app.app", "-m", *args, *storage_args(tmp_path, study, kind)]


def test_real_sweep_rejects_over_budget_trials_untrained_and_records_what_tables_need(tmp_path):
    proc = run_cli(["mnist_arch.train", "-m", *SMALL_REAL, "trainer.epochs=1", "hydra/sweeper/sampler=random",
                    "hydra.sweeper.sampler.seed=3", "hydra.sweeper.n_trials=3",
                    "model.widths.multiplier=choice(0.9,1.0,3.0)", "model/norm=choice(bn_relu,relu_bn)",
                    *storage_args(tmp_path)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = load(tmp_path)
    kinds = by_kind(study)
    assert len(kinds["complete"]) == 3  # n_trials counts trained trials only
    over = [t for t in kinds["rejected"] if t.user_attrs["rejected"] == "over_budget"]  # (others: points proposed twice)
    assert over, "seed 3 samples multiplier 3.0 at least once"
    for t in over:
        assert t.state == TrialState.PRUNED and t.params["model.widths.multiplier"] == 3.0
        assert t.user_attrs["n_params"] > 20000 and t.user_attrs["budget_max"] == 20000
        assert t.user_attrs["reason"] == f"n_params={t.user_attrs['n_params']:,} > budget.max_params=20,000"
        assert "launched" not in t.user_attrs and t.intermediate_values == {}
        if hasattr(t, "constraints"):  # Optuna 5: samplers rank it infeasible
            assert t.constraints == {"budget_excess": float(t.user_attrs["n_params"] - 20000)}
        assert not (tmp_path / "sweep" / str(t.number)).exists()  # the job was never launched
        assert f"trial {t.number} rejected" in proc.stderr + proc.stdout
    for t in kinds["complete"]:
        attrs = t.user_attrs
        assert attrs["launched"] and attrs["n_params"] <= 20000 and attrs["epochs_run"] == 1
        assert t.value == attrs["best_test_acc"] == attrs["final_test_acc"] and attrs["best_epoch"] == 1
        assert set(attrs) >= {"epoch_reached_target", "seconds", "device", "overrides", "output_dir", "curve"}
        assert t.intermediate_values == {1: attrs["best_test_acc"]}
        assert attrs["output_dir"] == str(tmp_path / "sweep" / str(t.number))
        assert (tmp_path / "sweep" / str(t.number) / "metrics.json").is_file()
        assert any(o.startswith("model.widths.multiplier=") for o in attrs["overrides"])
    assert study.metric_names == ["best_test_acc"]
    results = OmegaConf.load(tmp_path / "sweep" / "optimization_results.yaml")
    assert results.best_value == max(t.value for t in kinds["complete"])
    assert "storage: sqlite:///" in proc.stderr + proc.stdout


def test_pruning_stops_a_hopeless_trial_early(tmp_path):
    proc = run_cli(["mnist_arch.train", "-m", *SMALL_REAL, "trainer.epochs=3", "hydra/sweeper/sampler=grid",
                    "hydra.sweeper.sampler.seed=0", "hydra.sweeper.n_trials=3",
                    "hydra.sweeper.pruner.n_startup_trials=1", "hydra.sweeper.pruner.n_warmup_steps=0",
                    "optim.lr=choice(0.01,0.0000001,0.005)", *storage_args(tmp_path)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    kinds = by_kind(load(tmp_path))
    (hopeless,) = [t for t in kinds["pruned"] if t.params["optim.lr"] == 0.0000001]
    assert hopeless.user_attrs["epochs_run"] == hopeless.user_attrs["pruned_at_step"] < 3
    assert sorted(hopeless.intermediate_values) == list(range(1, hopeless.user_attrs["epochs_run"] + 1))
    assert len(kinds["complete"]) + len(kinds["pruned"]) == 3  # pruned trials were trained: they count
    assert all(t.user_attrs["pruned_at_step"] < 3 for t in kinds["pruned"])  # never pruned at the last epoch


def test_a_space_entirely_over_budget_stops_with_a_clear_message(tmp_path):
    proc = run_cli(["mnist_arch.train", "-m", *SMALL_REAL, "model.widths.multiplier=interval(3.0,4.0)",
                    "hydra.sweeper.max_rejected_streak=3", *storage_args(tmp_path)], cwd=tmp_path)
    assert proc.returncode != 0
    assert "the last 3 trials were all over budget" in proc.stderr and "seems to be over budget" in proc.stderr
    assert "Traceback" not in proc.stderr
    kinds = by_kind(load(tmp_path))
    assert set(kinds) == {"rejected"} and len(kinds["rejected"]) == 3
    assert not (tmp_path / "sweep" / "0").exists()
    # a discrete space says so as soon as each of its points has been found over budget
    proc = run_cli(["mnist_arch.train", "-m", *SMALL_REAL, "model.widths.multiplier=choice(3.0,4.0)",
                    *storage_args(tmp_path, "discrete")], cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "every one of the search space's 2 points is over budget or unbuildable" in proc.stderr


def test_a_config_that_fails_whatever_the_trial_stops_the_sweep_at_once(tmp_path):
    # 29x29 kernels collapse the 28-pixel input whatever lr the sampler picks: one failed trial, then a
    # clear stop, not max_rejected_streak failures and an "over budget" message.
    proc = run_cli(["mnist_arch.train", "-m", *SMALL_REAL, "model.kernel_size=29", "optim.lr=interval(0.01,0.1)",
                    *storage_args(tmp_path)], cwd=tmp_path)
    assert proc.returncode != 0
    assert "every trial would fail: the sweep's config cannot be built even without the searched values" in proc.stderr
    assert "Traceback" not in proc.stderr and "over budget" not in proc.stderr
    (failed,) = load(tmp_path).get_trials()
    assert failed.state == TrialState.FAIL and "cannot build the trial's config" in failed.user_attrs["error"]
    assert not (tmp_path / "sweep" / "0").exists()


def test_a_trial_that_cannot_be_built_fails_alone(tmp_path):
    # Kernel 29 collapses the input; kernel 3 trains. The seeded sampler proposes 29 at least once.
    proc = run_cli(["mnist_arch.train", "-m", *SMALL_REAL, "trainer.epochs=1", "hydra/sweeper/sampler=random",
                    "hydra.sweeper.sampler.seed=1", "model.kernel_size=choice(3,29)", "model.dropout.rate=choice(0.0,0.05)",
                    "hydra.sweeper.n_trials=2",
                    *storage_args(tmp_path)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    kinds = by_kind(load(tmp_path))
    assert [t.params["model.kernel_size"] for t in kinds["complete"]] == [3, 3]
    assert kinds["fail"] and all(t.params["model.kernel_size"] == 29 for t in kinds["fail"])
    for t in kinds["fail"]:
        assert t.user_attrs["error"].startswith("cannot build the trial's config:") and "launched" not in t.user_attrs


def test_multi_objective_accuracy_and_parameters_give_a_pareto_front(tmp_path):
    proc = run_cli(["mnist_arch.train", "-m", *SMALL_REAL, "trainer.epochs=1", "hydra.sweeper.n_trials=2",
                    "hydra.sweeper.direction=[maximize,minimize]", "hydra.sweeper.objectives=[best_test_acc,n_params]",
                    "model.widths.multiplier=choice(0.5,1.0)", *storage_args(tmp_path)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = load(tmp_path)
    complete = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert len(complete) == 2
    for t in complete:
        assert t.values == [t.user_attrs["best_test_acc"], t.user_attrs["n_params"]]
    assert study.metric_names == ["best_test_acc", "n_params"] and study.best_trials
    assert "solutions" in OmegaConf.load(tmp_path / "sweep" / "optimization_results.yaml")
    assert "pruner: none (Optuna prunes single-objective studies only)" in proc.stderr + proc.stdout


def test_nan_and_exceptions_fail_their_trial_but_not_the_sweep(tmp_path):
    proc = run_cli(toy(tmp_path, "x=choice(0,1,2,3,4,5)", "nan_on=[1]", "raise_on=[2]", "hydra/sweeper/sampler=grid",
                       "hydra.sweeper.n_trials=4", "hydra.sweeper.max_failure_rate=1.0"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    kinds = by_kind(load(tmp_path, "toy"))
    assert len(kinds["complete"]) == 4
    errors = {t.params["x"]: t.user_attrs["error"] for t in kinds["fail"]}
    (raised,) = [t for t in kinds["fail"] if t.params["x"] == 2]
    log = raised.user_attrs["error_log"]  # a job's own error keeps its traceback; a NaN result has none
    assert errors == {1: "objective is not finite: [nan]", 2: f"RuntimeError: boom at x=2 (traceback: {log})"}
    assert open(log).read().rstrip().endswith("RuntimeError: boom at x=2")


def test_too_many_failures_stop_the_sweep(tmp_path):
    proc = run_cli(toy(tmp_path, "x=choice(0,1,2,3,4,5)", "raise_on=[0,1,2,3,4,5]", "hydra.sweeper.n_trials=4",
                       "hydra.sweeper.max_failure_rate=0.5"), cwd=tmp_path)
    assert proc.returncode != 0
    assert "1 of 1 trained trials failed, over max_failure_rate=0.5" in proc.stderr
    assert "RuntimeError: boom" in proc.stderr


def wait_for(predicate, timeout=120.0):
    """Poll ``predicate`` until it returns a true value. A study not created yet (KeyError) reads as not yet;
    any other exception is a broken predicate and fails the test at once, with its traceback."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except KeyError:
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for: {predicate.__doc__ or 'the condition'}")


@pytest.mark.parametrize("retry", [False, True])
def test_killed_sweep_resumes_with_exactly_n_trials_and_the_killed_trial_failed(tmp_path, retry):
    args = toy(tmp_path, "x=range(0,100)", "hydra.sweeper.n_trials=3", f"hydra.sweeper.retry_stale_trials={str(retry).lower()}")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # a 300 s trial: whenever the poll sees it running, it is still running at the kill
    first = subprocess.Popen([sys.executable, "-m", *args, "sleep=300"], cwd=tmp_path, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: any(t.state == TrialState.RUNNING and t.user_attrs.get("launched")
                             for t in load(tmp_path, "toy").get_trials()))
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    (killed,) = [t for t in load(tmp_path, "toy").get_trials() if t.state == TrialState.RUNNING]

    proc = run_cli([*args, "sleep=0.2"], cwd=tmp_path)  # the same command again (with short trials)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = load(tmp_path, "toy").get_trials()
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    again = trials[killed.number]
    # the killed worker ran on this host: its trial is failed at once, no grace period waited
    assert again.state == TrialState.FAIL and f":{first.pid}) is gone" in again.user_attrs["error"]
    retries = [t for t in trials if t.user_attrs.get("retry_of") == killed.number]
    if retry:
        assert len(retries) == 1 and retries[0].params == killed.params and retries[0].state == TrialState.COMPLETE
    else:
        assert retries == []


def test_a_claim_cut_short_by_an_outage_is_failed_not_left_running(tmp_path):
    # What a database outage between ask and the "launched" mark leaves behind: a RUNNING trial
    # that no worker will ever train or heartbeat.
    study = optuna.create_study(study_name="toy", storage=open_storage(STORAGES["sqlite"].format(tmp_path)),
                                direction="maximize")
    orphan = study.ask({"x": optuna.distributions.IntDistribution(0, 99)})
    proc = run_cli(toy(tmp_path, "x=range(0,100)", "hydra.sweeper.n_trials=2", "hydra.sweeper.max_failure_rate=0.0",
                       "hydra.sweeper.grace_period=600"),  # not failed as stale: as unlaunched, at once
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]  # not a failure of a trained trial: the rate stays 0
    trials = load(tmp_path, "toy").get_trials()
    left = trials[orphan.number]
    assert left.state == TrialState.FAIL and "never launched" in left.user_attrs["error"]
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2
    assert not [t for t in trials if t.state == TrialState.RUNNING]


def test_n_jobs_workers_share_the_study_without_barriers(tmp_path):
    proc = run_cli(toy(tmp_path, "x=range(0,100)", "sleep=1", "hydra.sweeper.n_trials=6", "hydra.sweeper.n_jobs=2"),
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = load(tmp_path, "toy").get_trials()
    assert len(trials) == 6 and all(t.state == TrialState.COMPLETE for t in trials)
    assert len({t.params["x"] for t in trials}) == 6  # the two processes never trained a point twice


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_two_invocations_of_the_same_command_finish_exactly_n_trials(tmp_path, kind):
    args = toy(tmp_path, "x=range(0,100)", "sleep=0.5", "hydra.sweeper.n_trials=6", kind=kind)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-m", *args], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    trials = load(tmp_path, "toy", kind).get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 6 and len({t.number for t in trials}) == len(trials)
    assert not [t for t in trials if t.state == TrialState.RUNNING]


def test_rerunning_a_finished_sweep_trains_nothing_more(tmp_path):
    args = toy(tmp_path, "x=range(0,10)", "hydra.sweeper.n_trials=2")
    assert run_cli(args, cwd=tmp_path).returncode == 0
    proc = run_cli(args, cwd=tmp_path)
    assert proc.returncode == 0
    assert len(load(tmp_path, "toy").get_trials()) == 2
    assert "2 of 2 trained trials done" in proc.stderr + proc.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["x=5"], "the search space is empty"),
        (["x=range(5,1)"], "search space: x=range(5,1): the range is empty"),
        (["x=range(0,3)", "hydra.sweeper.n_trials=0"], "hydra.sweeper.n_trials=0 is out of range"),
        (["x=range(0,3)", "hydra.sweeper.direction=up"], "hydra.sweeper.direction='up' is not one of: maximize, minimize"),
    ],
)
def test_bad_sweeper_input_is_one_clear_line(tmp_path, args, message):
    proc = run_cli(toy(tmp_path, *args), cwd=tmp_path)
    assert proc.returncode != 0
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_a_study_with_another_direction_is_refused(tmp_path):
    assert run_cli(toy(tmp_path, "x=range(0,3)", "hydra.sweeper.n_trials=1"), cwd=tmp_path).returncode == 0
    proc = run_cli(toy(tmp_path, "x=range(0,3)", "hydra.sweeper.direction=minimize"), cwd=tmp_path)
    assert proc.returncode != 0
    assert "study 'toy' exists with direction ['maximize'], not ['minimize']" in proc.stderr


def test_a_second_study_begun_with_the_first_ones_seed_is_told_it_repeats_its_points(tmp_path):
    space = ["x=interval(0,10)", "hydra.sweeper.n_trials=2"]
    first = run_cli(toy(tmp_path, *space, study="first"), cwd=tmp_path)
    second = run_cli(toy(tmp_path, *space, study="second"), cwd=tmp_path)
    assert first.returncode == 0 and second.returncode == 0, second.stderr
    xs = lambda name: [t.params["x"] for t in load(tmp_path, name).get_trials()]
    assert xs("second") == xs("first")
    assert "study 'first' in this storage began with this seed and search space" in second.stdout
    assert "began with this seed and search space" not in first.stdout


def test_reporter_reaches_its_trial_from_another_process_through_the_storage(tmp_path):
    url = f"sqlite:///{tmp_path}/sweeps.db"
    study = optuna.create_study(study_name="bridge", storage=url, direction="maximize")
    trial = study.ask()
    script = (
        "from sweeper.api import SweepTrial, open_study\n"
        "from sweeper.reporter import TrialReporter\n"
        "r = TrialReporter(metric='test_acc')\n"
        f"r.trial = SweepTrial(open_study({url!r}, 'bridge'), {trial.number})\n"
        "assert r.on_epoch_end(1, {'test_acc': 97.5, 'epochs': 3}) is False\n"
        "r.on_train_end({'n_params': 123, 'best_test_acc': 97.5, 'epochs_run': 1, 'min_last_k_val_acc': 96.0,\n"
        "                'history': [{'test_acc': 97.5, 'val_acc': 96.0}]})\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    frozen = optuna.load_study(study_name="bridge", storage=url).trials[0]
    assert frozen.intermediate_values == {1: 97.5}
    assert frozen.user_attrs["curve"] == [97.5]
    assert frozen.user_attrs["n_params"] == 123 and frozen.user_attrs["epochs_run"] == 1
    assert frozen.user_attrs["min_last_k_val_acc"] == 96.0 and frozen.user_attrs["val_curve"] == [96.0]
    assert "history" not in frozen.user_attrs  # per-epoch records stay in the job's metrics.json
