"""Boundaries the fast run once let through: `<` against `<=`, a default, a direction, an even count, a
missing key, the main process against a worker's. Each test names the change of behaviour it catches.
In-process and quick: the default run must see every one.
"""

import signal
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.trial import TrialState

from sweeper.errors import SweepError

from .support import in_process
from .test_sweeper_config import MISSING_PACKAGES


def toy_sweep(tmp_path: Path, study: str, *overrides: str) -> int:
    from tests.toy_app.app import main

    return in_process(main, ["app", "-m", f"hydra.sweeper.storage=sqlite:///{tmp_path}/sweeps.db",
                             f"hydra.sweep.dir={tmp_path}/sweep_{study}", f"hydra.sweeper.study_name={study}", *overrides])


def toy_trials(tmp_path: Path, study: str):
    return optuna.load_study(study_name=study, storage=f"sqlite:///{tmp_path}/sweeps.db").trials


# ------------------------------------------------------------------ interrupts are not the job's failure


@pytest.mark.parametrize("sig, code", [("SIGTERM", 143), ("SIGHUP", 129), ("SIGINT", 130)])
def test_a_job_stopped_by_a_signal_is_not_written_up_as_a_failure(tmp_path, sig, code):
    previous = signal.signal(signal.SIGHUP, signal.SIG_DFL)  # a test run under nohup inherits SIGHUP ignored
    try:
        assert toy_sweep(tmp_path, "sig", "x=choice(1)", f"send_signal={sig}") == code
    finally:
        signal.signal(signal.SIGHUP, previous)
    stopped = toy_trials(tmp_path, "sig")[0]
    assert stopped.user_attrs["error"] == "interrupted"
    assert "traceback" not in stopped.user_attrs and "error_log" not in stopped.user_attrs
    assert not list((tmp_path / "sweep_sig").rglob("error.log"))


# ------------------------------------------------------------------ settings at their edges


def sweeper_with(**settings):
    from sweeper.optuna_sweeper import OptunaBudgetSweeper

    base = dict(sampler=OmegaConf.create({"_target_": "optuna.samplers.RandomSampler"}),
                pruner=OmegaConf.create({"_target_": "optuna.pruners.NopPruner"}), direction="maximize", storage=None,
                study_name=None, n_trials=1, n_jobs=1, max_failure_rate=0.0, search_space=None, params=None,
                custom_search_space=None, objectives=None, metrics=None, budget=OmegaConf.create({}), threads_key=None,
                allow_search_space_change=False, max_rejected_streak=1, heartbeat_interval=20, grace_period=120,
                retry_stale_trials=False, threads_per_job=None, storage_patience=120,
                repeats=OmegaConf.create({"n": 1}), n_complete_trials=None)
    return OptunaBudgetSweeper(**{**base, **settings})


def test_a_grace_period_equal_to_the_heartbeat_interval_is_refused():
    # a live trial could be failed between two of its beats
    with pytest.raises(SweepError, match=r"^hydra.sweeper.grace_period=20 must be more than heartbeat_interval=20$"):
        sweeper_with(heartbeat_interval=20, grace_period=20)
    sweeper_with(heartbeat_interval=20, grace_period=21)


def test_nsgaiii_builds_its_documented_population_of_20():
    from sweeper.config import NSGAIIISamplerConf, NSGAIISamplerConf
    from sweeper.samplers import make_sampler

    for schema in (NSGAIIISamplerConf, NSGAIISamplerConf):
        made = make_sampler(OmegaConf.structured(schema), {}, 0)
        assert made._population_size == 20, schema.__name__


def test_the_budget_excess_is_handed_to_optunas_constraint_aware_samplers(tmp_path):
    """TPE, NSGA-II/III and GP learn the infeasible region from each trial's constraints (Optuna 5:
    ``trial.set_constraint``): the budget's excess is that constraint, over budget and within it. (A grid whose
    last point is over budget once ended in a traceback: GridSampler stops the study from that tell.)"""
    assert toy_sweep(tmp_path, "budget", "x=choice(2,3)", "hydra.sweeper.n_trials=2", "hydra/sweeper/sampler=grid",
                     "hydra.sweeper.budget.measure=tests.toy_app.measure.x_squared", "hydra.sweeper.budget.max=5") == 0
    told = {t.params["x"]: {k.rsplit(":", 1)[-1]: v for k, v in t.system_attrs.items() if k.startswith("constraints")}
            for t in toy_trials(tmp_path, "budget")}
    assert told == {2: {"budget_excess": -1.0}, 3: {"budget_excess": 4.0}}


def test_a_new_study_repeating_another_studys_sampler_and_seed_says_so_in_the_sweep(tmp_path, capsys):
    assert toy_sweep(tmp_path, "first", "x=choice(1,2,3)", "hydra.sweeper.n_trials=1") == 0
    assert "began with this seed and search space" not in capsys.readouterr().out
    assert toy_sweep(tmp_path, "second", "x=choice(1,2,3)", "hydra.sweeper.n_trials=1") == 0
    said = [line for line in capsys.readouterr().out.splitlines() if "began with this seed and search space" in line]
    assert len(said) == 1 and "hydra.sweeper.sampler.seed=1: study 'first' in this storage" in said[0]
    assert toy_sweep(tmp_path, "third", "x=choice(1,2,3)", "hydra.sweeper.n_trials=1",
                     "hydra.sweeper.sampler.seed=2") == 0
    assert "began with this seed and search space" not in capsys.readouterr().out


@pytest.mark.parametrize("sampler, blocked, said", MISSING_PACKAGES[:3])
def test_a_sampler_whose_package_is_missing_is_one_line_before_any_trial(tmp_path, capsys, monkeypatch, sampler,
                                                                        blocked, said):
    import sys

    for module in blocked:
        monkeypatch.setitem(sys.modules, module, None)  # what Python's import does when it is not installed
    assert toy_sweep(tmp_path, "needs", "x=choice(1,2)", f"hydra/sweeper/sampler={sampler}") == 1
    assert capsys.readouterr().err == f"Error: hydra.sweeper.sampler {said}\n"
    assert not (tmp_path / "sweeps.db").exists() or "needs" not in optuna.get_all_study_names(f"sqlite:///{tmp_path}/sweeps.db")


# ------------------------------------------------------------------ repeats and pruning


def test_the_median_of_an_even_number_of_repeats_is_the_mean_of_the_middle_two():
    from sweeper.repeats import aggregate

    assert aggregate("median", [[1.0], [4.0], [2.0], [10.0]]) == [3.0]
    assert aggregate("median", [[1.0, 5.0], [2.0, 7.0]]) == [1.5, 6.0]


def test_the_repeats_median_pool_counts_a_trial_whose_first_repeat_finished_while_its_next_runs():
    from optuna.trial import create_trial

    from sweeper.samplers import make_pruner

    study = optuna.create_study(direction="maximize")
    for state, value, run in [(TrialState.COMPLETE, 99.5, 3), (TrialState.COMPLETE, 99.4, 3), (TrialState.PRUNED, 99.0, 1),
                              (TrialState.PRUNED, 99.1, 1), (TrialState.PRUNED, 99.2, 1), (TrialState.RUNNING, 99.15, 1)]:
        study.add_trial(create_trial(state=state, value=value if state == TrialState.COMPLETE else None,
                                     intermediate_values={8: value}, user_attrs={"repeats_run": run}))
    trial = study.ask()
    trial.report(99.18, 8)
    median = OmegaConf.create({"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 1, "n_warmup_steps": 0})
    # with the running one the median is 99.175 (kept); without it, 99.2 (pruned)
    assert bool(make_pruner(median, repeated=True).prune(study, study._storage.get_trial(trial._trial_id))) is False


def test_a_report_record_without_epochs_can_be_pruned():
    from sweeper.api import SweepTrial
    from sweeper.reporter import TrialReporter

    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=1e9))
    trial = study.ask()
    reporter = TrialReporter(metric="test_acc")
    reporter.trial = SweepTrial(study, trial.number)
    assert reporter.on_epoch_end(1, {"test_acc": 97.0}) is True  # no "epochs": no epoch is known to be the last


def test_a_job_in_its_own_process_opens_the_study_with_the_sweeps_patience(tmp_path, monkeypatch):
    """No sweep in this process (nothing in ACTIVE_STUDIES), as in a submitit or joblib job: every wait for
    the database is the sweep's ``storage_patience``, the study's opening included."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict

    import sweeper.storage as storage
    from sweeper.api import current_trial

    from .test_sweeper_units import load_toy

    url = f"sqlite:///{tmp_path}/sweeps.db"
    optuna.create_study(study_name="toy", storage=url, direction="maximize").ask()
    cfg = load_toy([f"hydra.sweeper.storage={url}", "hydra.sweeper.storage_patience=7"])
    with open_dict(cfg):
        cfg.hydra.mode, cfg.hydra.job.num = RunMode.MULTIRUN, 0
    waited = []
    real = storage.retry_transient

    def record(fn, what, patience_s):
        waited.append((what.split(" ")[0], patience_s))
        return real(fn, what, patience_s)

    monkeypatch.setattr(storage, "retry_transient", record)
    HydraConfig.instance().set_config(cfg)
    try:
        assert current_trial().number == 0
    finally:
        HydraConfig.instance().cfg = None
    assert waited and all(patience == 7 for _, patience in waited), waited
    assert "opening" in {what for what, _ in waited}


# ------------------------------------------------------------------ the results tool


def test_pareto_of_a_study_that_minimizes_one_objective_keeps_the_low_values(tmp_path):
    from sweeper.results import parse_args, run

    url = f"sqlite:///{tmp_path}/mo.db"
    study = optuna.create_study(study_name="mo", storage=url, directions=["maximize", "minimize"])
    for acc, cost in [(0.9, 10.0), (0.8, 20.0), (0.95, 30.0), (0.7, 5.0)]:
        study.add_trial(optuna.trial.create_trial(values=[acc, cost]))
    import json

    rows = json.loads(run(parse_args(["--storage", url, "mo", "--pareto", "--format", "json"])))
    assert sorted(r["trial"] for r in rows) == [0, 2, 3]  # (0.8, 20) is beaten by (0.9, 10) on both


def test_an_export_that_does_not_compose_back_to_the_trials_nested_values_is_not_kept(tmp_path, monkeypatch):
    import sweeper.export as export

    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "config.yaml").write_text("defaults:\n  - _self_\nmodel:\n  width: 3\n  depth: 2\n")
    real = export.compose
    calls = []

    def drifting(config_dir, name, overrides):
        cfg = real(config_dir, name, overrides)
        calls.append(overrides)
        if len(calls) == 2:  # the exported file's composition: one nested value off
            cfg["model"]["depth"] = 5
        return cfg

    monkeypatch.setattr(export, "compose", drifting)
    with pytest.raises(export.ExportError, match="does not compose to the trial's config; nothing written"):
        export.write_experiment("e", ["model.width=7"], "about", "app", conf, "config", None)
    assert not (conf / "experiment" / "e.yaml").exists() and list((conf / "experiment").iterdir()) == []


# ------------------------------------------------------------------ the MNIST app


def test_an_epoch_exactly_at_the_target_counts_as_reaching_it():
    from mnist_arch.trainer import summarize

    history = [{"epoch": 1, "test_acc": 99.3}, {"epoch": 2, "test_acc": 99.4}, {"epoch": 3, "test_acc": 99.5}]
    assert summarize(history, 99.4, 3)["epoch_reached_target"] == 2


def test_annealing_over_every_epoch_is_allowed():
    from mnist_arch.optim import check_schedule

    check_schedule(OmegaConf.create({"name": "onecycle", "anneal_epochs": 5}), 5)  # the whole run ramps down
    with pytest.raises(Exception, match="schedule.anneal_epochs=6 must be between 0 and trainer.epochs=5"):
        check_schedule(OmegaConf.create({"name": "onecycle", "anneal_epochs": 6}), 5)


# ------------------------------------------------------------------ a key the app's config does not have


@pytest.mark.parametrize("override, said", [
    ("model.widht=choice(3,4)", "model.widht is not a key of the app's config; did you mean model.width?"),
    ("optimizer.lrr=interval(0.01,0.9)", "optimizer.lrr is not a key of the app's config; did you mean optimizer.lr?"),
])
def test_a_searched_key_the_app_does_not_have_is_one_line_before_any_trial(tmp_path, capsys, override, said):
    import time

    started = time.monotonic()
    assert toy_sweep(tmp_path, "typo", "x=choice(1,2)", override) == 1
    assert time.monotonic() - started < 20  # refused at once, not after a streak of failed trials
    err = capsys.readouterr().err
    assert err == f"Error: search space: {said} (to add a new key: +{said.split(' ')[0]}=...)\n"
    assert "budget" not in err
    assert not (tmp_path / "sweeps.db").exists() or "typo" not in optuna.get_all_study_names(f"sqlite:///{tmp_path}/sweeps.db")


def test_a_key_added_on_purpose_or_under_a_chosen_group_still_sweeps(tmp_path):
    assert toy_sweep(tmp_path, "added", "x=choice(1)", "+new.key=choice(1,2)", "hydra.sweeper.n_trials=2") == 0
    assert sorted(t.params["+new.key"] for t in toy_trials(tmp_path, "added") if t.state == TrialState.COMPLETE) == [1, 2]
    # optimizer=choice(adam,sgd): a key of one option only is not refused before the trials
    assert toy_sweep(tmp_path, "grouped", "optimizer=choice(adam,sgd)", "optimizer.lr=choice(0.1)",
                     "hydra.sweeper.n_trials=2") == 0


def test_a_streak_of_unbuildable_trials_names_the_last_error_and_no_budget(tmp_path, capsys):
    assert toy_sweep(tmp_path, "unbuildable", "x=choice(a,b,c)", "hydra.sweeper.budget.measure=tests.toy_app.measure.x_squared",
                     "hydra.sweeper.max_rejected_streak=3") == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: the last 3 trials could not be built or repeated trained points (last: trial ")
    assert "invalid literal for int()" in err and err.endswith("; nothing was trained\n") and "budget" not in err


def test_a_journal_path_is_relative_or_absolute_as_a_sqlite_one_is(tmp_path, monkeypatch):
    from sweeper.storage import local_file

    monkeypatch.chdir(tmp_path)
    assert local_file("sqlite:///rel.db") == tmp_path / "rel.db"
    assert local_file("journal:///rel.log") == tmp_path / "rel.log"
    assert local_file(f"sqlite:///{tmp_path}/abs.db") == local_file(f"journal:///{tmp_path}/abs.db") == tmp_path / "abs.db"
    assert local_file("journal://rel.log") == tmp_path / "rel.log"  # two slashes: relative, every letter kept
    for memory in ("sqlite://", "sqlite:///", "sqlite:///:memory:", None):  # SQLite in memory: no file
        assert local_file(memory) is None
