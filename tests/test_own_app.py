"""What a user bringing their own Hydra app meets around the sweeper: the toy app's sweeps in this process
(seconds each): a failing job's traceback kept, group options checked before any trial, one-line errors."""

import json
import re
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from sweeper.results import ResultsError
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
    from sweeper.errors import SweepError

    with pytest.raises(SweepError, match="no trial completed"):  # the sweep's own error, raised whole here too
        sweep(tmp_path, "x=choice(2)", "raise_on=[2]", "hydra.sweeper.n_trials=1", "hydra.sweeper.max_failure_rate=1.0")
    err = capsys.readouterr().err
    assert "trial 0: the job failed:\nTraceback (most recent call last):" in err
    assert str(Path(__file__).parent / "toy_app" / "app.py") in err and "RuntimeError: boom at x=2" in err


def test_a_sweep_whose_every_trial_failed_exits_non_zero_whatever_the_failure_rate_allowed(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    assert sweep(tmp_path, "x=choice(1,2,3)", "raise_on=[1,2,3]", "hydra.sweeper.n_trials=3", "hydra/sweeper/sampler=grid",
                 "hydra.sweeper.max_failure_rate=1.0") == 1
    failed = [t for t in trials(tmp_path) if t.state == TrialState.FAIL]
    assert len(failed) == 3 and all(Path(t.user_attrs["error_log"]).is_file() for t in failed)  # tracebacks kept
    err = capsys.readouterr().err
    assert err == (f"Error: no trial completed: 3 trained trials failed (last: trial {failed[-1].number}: "
                   f"{failed[-1].user_attrs['error']})\n")
    # one that completes among failures: the sweep did its job
    assert sweep(tmp_path, "x=choice(1,2,3,4)", "raise_on=[1,2,3]", "hydra.sweeper.n_trials=4", "hydra/sweeper/sampler=grid",
                 "hydra.sweeper.max_failure_rate=1.0", "hydra.sweeper.study_name=one_completes") == 0


@pytest.mark.parametrize("make, kept_it", [(optuna.TrialPruned, False), (KeyboardInterrupt, False),
                                           (lambda: RuntimeError("diverged"), True), (lambda: ValueError("bad width"), True)])
def test_only_a_jobs_own_failure_is_kept_not_a_prune_or_an_interrupt(make, kept_it):
    from sweeper.tracebacks import KeepTraceback, kept

    raised = make()  # a fresh exception each run: a reused one carries the traceback of its earlier raise

    def task(cfg):
        raise raised

    with pytest.raises(type(raised)) as info:
        KeepTraceback(task)(None)
    text, path = kept(info.value)
    assert (text is not None) == kept_it and path is None  # no Hydra job around: no folder to write to
    if kept_it:
        assert "in task" in text and "KeepTraceback" not in text and text.rstrip().endswith(str(raised))


def test_the_wrapped_task_keeps_the_apps_names_and_a_nameless_callable_gets_task():
    """Hydra names the job by the task function (the job's folder, its log), and launchers that pickle the
    task find it by module and name: the wrapper answers as the app's function."""
    from sweeper.tracebacks import KeepTraceback

    wrapped = KeepTraceback(Tasks.double)
    assert (wrapped.__module__, wrapped.__name__, wrapped.__qualname__) == (__name__, "double", "Tasks.double")
    assert wrapped(3) == 6

    class Callable:
        def __call__(self, cfg):
            return cfg

    nameless = KeepTraceback(Callable())
    assert (nameless.__module__, nameless.__name__, nameless.__qualname__) == (__name__, "task", "task")


class Tasks:
    @staticmethod
    def double(cfg):
        return 2 * cfg


# ------------------------------------------------------------------ what a sweep prints


def printed(capsys, tmp_path):
    """The sweep's lines as printed, less their timestamps; the test's folder as TMP, seconds as Ns."""
    lines = [re.sub(r"^\[[^]]*\]\[HYDRA\] ", "", line) for line in capsys.readouterr().out.splitlines()]
    return [re.sub(r"\| \d+s", "| Ns", line.replace(str(tmp_path), "TMP")) for line in lines]


def test_a_sweep_prints_its_settings_a_line_per_trial_and_its_best(tmp_path, capsys):
    assert sweep(tmp_path, "x=choice(1,2,4)", "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=3", "steps=2",
                 "hydra.sweeper.budget.measure=tests.toy_app.measure.x_squared", "hydra.sweeper.budget.max=9",
                 "hydra.sweeper.repeats.n=2", "hydra.sweeper.n_complete_trials=2") == 0
    assert printed(capsys, tmp_path) == [
        "storage: sqlite:///TMP/sweeps.db",
        "study: own (maximize objective), 0 of 3 trained trials done",
        "sampler: GridSampler, pruner: MedianPruner (against every trial whose first repeat ran all its steps), n_jobs: 1",
        "budget: budget_value <= 9, measured by tests.toy_app.measure.x_squared before launch (over-budget trials are "
        "recorded, never trained)",
        "repeats: 2 per trial (seed = 0, 1), mean",
        "ends at 2 complete trials (or 3 trained)",
        "checkpoints: TMP/sweeps.checkpoints (jobs that save them resume a stopped trial there)",
        "search space: x: choice(1,2,4)",
        "fixed: steps=2",
        "Launching 1 jobs locally", "\t#0 : x=1 steps=2 seed=0", "trial 0 repeat 1 of 2 (seed=0): 1",
        "Launching 1 jobs locally", "\t#0 : x=1 steps=2 seed=1",
        "trial 0 COMPLETE 1 | 1 budget_value | 2 steps | Ns | best 1 (trial 0) | 2 left",
        "trial 1 rejected: budget_value=16 > hydra.sweeper.budget.max=9",
        "Launching 1 jobs locally", "\t#2 : x=2 steps=2 seed=0", "trial 2 repeat 1 of 2 (seed=0): 2",
        "Launching 1 jobs locally", "\t#2 : x=2 steps=2 seed=1",
        "trial 2 COMPLETE 2 | 4 budget_value | 2 steps | Ns | best 2 (trial 2) | 1 left",
        "every one of the search space's 3 points has been tried (1 over budget or unbuildable): the sweep ends",
        "best trial 2: objective = 2 with {'x': 2}",
    ]
    assert (tmp_path / "sweep" / "optimization_results.yaml").read_text() == (
        "name: optuna\nbest_params:\n  x: 2\nbest_value: 2.0\n")
    # minimize: the best is the least; a failed trial's line ends with its error
    assert sweep(tmp_path, "x=choice(3,1,2)", "hydra/sweeper/sampler=grid", "hydra.sweeper.direction=minimize",
                 "hydra.sweeper.study_name=least", "raise_on=[1]", "hydra.sweeper.max_failure_rate=1.0",
                 "hydra.sweeper.n_trials=3") == 0
    shown = ("sampler", "budget", "trial ", "best ")
    assert [line for line in printed(capsys, tmp_path) if line.startswith(shown)] == [
        "sampler: GridSampler, pruner: MedianPruner, n_jobs: 1",  # no repeats: the pruner as it is
        "budget: none (hydra.sweeper.budget.measure is not set)",
        "trial 0 COMPLETE 3 | Ns | best 3 (trial 0) | 2 left",
        "trial 1 COMPLETE 2 | Ns | best 2 (trial 1) | 1 left",
        "trial 2 FAIL - | Ns | best 2 (trial 1) | 1 left | RuntimeError: boom at x=1 (traceback: TMP/sweep/2/error.log)",
        "best trial 1: objective = 2 with {'x': 2}"]


def test_a_resumed_sweeps_header_counts_the_trained_trials_it_has_done(tmp_path, capsys):
    """Complete trials count toward n_trials; a failed one does not."""
    args = ["x=choice(1,2,4)", "hydra/sweeper/sampler=grid", "raise_on=[4]", "hydra.sweeper.max_failure_rate=1.0"]
    assert sweep(tmp_path, *args, "hydra.sweeper.n_trials=3") == 0
    assert sorted(t.state.name for t in trials(tmp_path)) == ["COMPLETE", "COMPLETE", "FAIL"]
    capsys.readouterr()
    assert sweep(tmp_path, *args, "hydra.sweeper.n_trials=5") == 0
    assert printed(capsys, tmp_path)[1] == "study: own (maximize objective), 2 of 5 trained trials done"


def test_the_headers_search_space_and_fixed_values_name_each_or_say_custom(tmp_path, capsys):
    assert sweep(tmp_path, "x=choice(1,2)", "steps=range(2,4)", "seed=3", "sleep=0.01", "hydra.sweeper.n_trials=1") == 0
    assert [line for line in printed(capsys, tmp_path) if line.startswith(("search space", "fixed"))] == [
        "search space: x: choice(1,2), steps: int[2,3]", "fixed: seed=3 sleep=0.01"]
    assert sweep(tmp_path, "hydra.sweeper.custom_search_space=tests.toy_app.space.steps_up_to_x", "x=3",
                 "hydra.sweeper.n_trials=1", "hydra.sweeper.study_name=custom") == 0
    lines = printed(capsys, tmp_path)
    assert [line for line in lines if line.startswith(("search space", "fixed"))] == ["search space: custom", "fixed: x=3"]


@pytest.mark.parametrize("url, shown", [("sqlite:///rel.db", "sqlite:///rel.db (TMP/rel.db)"),
                                         ("journal:///rel.log", "journal:///rel.log (TMP/rel.log)"),
                                         ("journal:////TMP/abs.log", "journal:////TMP/abs.log")])
def test_the_header_says_where_a_relative_storage_file_is_and_an_absolute_one_once(tmp_path, capsys, monkeypatch,
                                                                                  url, shown):
    monkeypatch.chdir(tmp_path)
    assert sweep(tmp_path, "x=choice(1)", "hydra.sweeper.n_trials=1",
                 f"hydra.sweeper.storage={url.replace('TMP', str(tmp_path))}") == 0
    assert printed(capsys, tmp_path)[0] == f"storage: {shown}"


def test_a_multi_objective_sweep_prints_no_pruner_and_writes_its_pareto_front(tmp_path, capsys):
    assert sweep(tmp_path, "x=choice(1,2)", "hydra/sweeper/sampler=grid", "returns=tuple", "hydra.sweeper.n_trials=2",
                 "hydra.sweeper.direction=[maximize,minimize]", "hydra.sweeper.budget.measure=tests.toy_app.measure.x_squared") == 0
    lines = printed(capsys, tmp_path)
    assert lines[1:4] == ["study: own (maximize/minimize objective/objective), 0 of 2 trained trials done",
                          "sampler: GridSampler, pruner: none (Optuna prunes single-objective studies only), n_jobs: 1",
                          "budget: budget_value <= none (recorded only), measured by tests.toy_app.measure.x_squared "
                          "before launch (over-budget trials are recorded, never trained)"]
    assert [line for line in lines if line.startswith(("trial ", "Pareto"))] == [
        "trial 0 COMPLETE 1/-1 | 1 budget_value | Ns | 1 left", "trial 1 COMPLETE 2/-2 | 4 budget_value | Ns | 0 left",
        "Pareto front: 1 trials"]
    assert (tmp_path / "sweep" / "optimization_results.yaml").read_text() == (
        "name: optuna\nsolutions:\n- params:\n    x: 2\n  values:\n  - 2.0\n  - -2.0\n")


# ------------------------------------------------------------------ config-group options, checked at start


def test_a_choice_over_a_config_group_runs_every_option(tmp_path):
    assert sweep(tmp_path, "optimizer=choice(adam,sgd)", "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=2") == 0
    assert sorted(t.user_attrs["optimizer"] for t in trials(tmp_path) if t.state == TrialState.COMPLETE) == \
        ["adam", "sgd"]


@pytest.mark.parametrize("space, said", [
    ("optimizer=choice(adam,sgdd)", "optimizer=choice(adam,sgdd): 'sgdd' is not an option of config group "
                                    "'optimizer'; its options: adam, sgd"),
    ("optimizer=choice(rmsprop,sgdd,sgd)", "'rmsprop', 'sgdd' are not options of config group 'optimizer'"),
])
def test_a_choice_of_a_missing_group_option_is_refused_before_any_trial(tmp_path, capsys, space, said):
    assert sweep(tmp_path, space, "hydra.sweeper.n_trials=4") == 1
    err = capsys.readouterr().err
    assert said in err and err.count("\n") == 1, err
    assert not (tmp_path / "sweeps.db").exists() or trials(tmp_path) == []


def test_group_choices_are_checked_with_prefixes_and_packages_and_plain_keys_left_alone():
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from sweeper.search_space import SearchSpaceError, check_group_choices

    options = {"db": ["mysql", "postgresql"], "model/norm": ["bn_relu", "none"]}.get
    ok = {"+db@backup": CategoricalDistribution(["mysql", "postgresql"]), "lr": FloatDistribution(0.1, 1.0),
          "model/norm": CategoricalDistribution(["none", "bn_relu"]), "x": CategoricalDistribution(["anything"])}
    check_group_choices(ok, lambda g: options(g) or [])
    with pytest.raises(SearchSpaceError, match=r"'sqlite' is not an option of config group 'db'; its options: mysql, "):
        check_group_choices({"++db@backup": CategoricalDistribution(["mysql", "sqlite"])}, lambda g: options(g) or [])


# ------------------------------------------------------------------ one line for every mistake, in any app


@pytest.mark.parametrize("override, said", [
    ("hydra.sweeper.n_trail=3", "hydra.sweeper.n_trail: no such setting; did you mean hydra.sweeper.n_trials?"),
    ("+hydra.sweeper.n_trail=3", "hydra.sweeper.n_trail: no such setting; did you mean hydra.sweeper.n_trials?"),
    ("hydra.sweeper.sampler.sed=3", "hydra.sweeper.sampler.sed: no such setting; did you mean hydra.sweeper.sampler.seed?"),
    ("hydra.sweeper.repeats.nn=2", "hydra.sweeper.repeats.nn: no such setting; did you mean hydra.sweeper.repeats.n?"),
    ("hydra.sweeper.zzzzzz=1", "hydra.sweeper.zzzzzz: no such setting; the settings of hydra.sweeper: sampler, direction,"),
    ("hydra.sweeper.n_jobs=0", "hydra.sweeper.n_jobs=0 is out of range: it must be >= 1"),  # raised inside instantiate
    ("hydra.sweeper.direction=up", "hydra.sweeper.direction='up' is not one of: maximize, minimize"),
    ("hydra.sweeper.n_trials=abc", "hydra.sweeper.n_trials=abc; Value 'abc' of type 'str' could not be converted to Integer"),
    ("hydra.sweeper.storage=mysql://u@localhost/db", "storage='mysql://u@localhost/db' needs a database driver "
     "(No module named 'MySQLdb'): pip install mysqlclient (or use mysql+pymysql://... with pip install pymysql)"),
    ("hydra.sweeper.storage=mysql+pymysql://u@localhost/db", "(No module named 'pymysql'): pip install pymysql"),
])
def test_a_sweeper_mistake_in_a_plain_hydra_app_is_one_line(tmp_path, capsys, monkeypatch, override, said):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    assert sweep(tmp_path, "x=choice(1,2)", override) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error") and said in err and err.count("\n") == 1, err
    for noise in ("Error in call to target", "SweepError(", "full_key", "object_type", "HYDRA_FULL_ERROR"):
        assert noise not in err


def test_a_misspelt_sweeper_key_in_the_apps_own_yaml_names_the_nearest(tmp_path, capsys, monkeypatch):
    """The user's config file, not the command line: the error arises while Hydra merges it."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    import runpy

    (tmp_path / "typo_app.py").write_text(
        "import hydra\n\n@hydra.main(config_path='.', config_name='config', version_base='1.3')\n"
        "def main(cfg):\n    return cfg.x ** 2\n\nif __name__ == '__main__':\n    main()\n")
    (tmp_path / "config.yaml").write_text(
        "defaults:\n  - override hydra/sweeper: optuna_budget\nx: 1\nhydra:\n  sweeper:\n    n_trail: 3\n"
        "    params:\n      x: range(-2, 3)\n")
    script = lambda: runpy.run_path(str(tmp_path / "typo_app.py"), run_name="__main__")
    assert in_process(script, ["typo_app.py", "-m", f"hydra.sweep.dir={tmp_path}/sweep"]) == 1
    assert capsys.readouterr().err == "Error: hydra.sweeper.n_trail: no such setting; did you mean hydra.sweeper.n_trials?\n"


def test_other_errors_of_the_app_keep_hydras_own_report(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    assert sweep(tmp_path, "x=choice(1,2)", "model.nosuch=1") == 1
    err = capsys.readouterr().err
    assert "Could not override 'model.nosuch'" in err and "HYDRA_FULL_ERROR" in err and not err.startswith("Error: ")


def test_hydra_full_error_still_shows_the_sweepers_traceback(tmp_path, monkeypatch):
    from sweeper.errors import SweepError

    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(Exception) as info:
        sweep(tmp_path, "x=choice(1,2)", "hydra.sweeper.n_jobs=0")
    assert any(isinstance(e, SweepError) and "n_jobs=0 is out of range" in str(e)
               for e in (info.value, info.value.__cause__))  # raised as it is (inside Hydra's instantiate)


# ------------------------------------------------------------------ the results tool on this app's studies


def results(tmp_path, *args, env=None):
    from sweeper.results import parse_args, run

    return run(parse_args(["--storage", f"sqlite:///{tmp_path}/sweeps.db", "own", *args]))


def test_a_two_objective_study_gets_a_column_per_objective_by_name_and_a_pareto_front_on_them(tmp_path):
    assert sweep(tmp_path, "x=choice(1,2,3)", "returns=dict", "hydra.sweeper.objectives=[v0,v1]",
                 "hydra.sweeper.direction=[maximize,maximize]", "hydra/sweeper/sampler=grid",
                 "hydra.sweeper.n_trials=3", "sleep=0.2") == 0
    text = results(tmp_path)
    summary, table = text.split("\n\n")
    assert summary.splitlines()[0] == "study own: maximize/maximize v0/v1; trials: 3 complete"
    assert "a full trial: " in summary and "unknown" not in summary  # the app reports no steps: every trial is full
    header = table.splitlines()[0].split()
    assert header[:5] == ["rank", "trial", "state", "v0", "v1"] and "objective" not in header
    assert [line.split()[3:5] for line in table.splitlines()[2:]] == [["3.00", "-3.00"], ["2.00", "-2.00"],
                                                                      ["1.00", "-1.00"]]
    # both up: x=3 gives (3, -3), best on v0 and worst on v1; every trial is on the front
    front = json.loads(results(tmp_path, "--pareto", "--format", "json"))
    assert sorted(r["v0"] for r in front) == [1.0, 2.0, 3.0]
    (best,) = json.loads(results(tmp_path, "--pareto", "--format", "json", "--sort", "v1"))[:1]
    assert best["v1"] == -1.0  # --sort on an objective follows its direction


def test_a_two_objective_study_without_names_gets_stable_default_names(tmp_path):
    assert sweep(tmp_path, "x=choice(1,2)", "returns=tuple", "hydra.sweeper.direction=[minimize,minimize]",
                 "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=2") == 0
    rows = json.loads(results(tmp_path, "--format", "json"))
    assert [(r["objective_0"], r["objective_1"]) for r in rows] in ([(1.0, -1.0), (2.0, -2.0)], [(2.0, -2.0), (1.0, -1.0)])
    front = json.loads(results(tmp_path, "--pareto", "--format", "json"))
    assert [(r["objective_0"], r["objective_1"]) for r in front] in ([(1.0, -1.0), (2.0, -2.0)], [(2.0, -2.0), (1.0, -1.0)])


def test_sort_filter_and_pareto_use_the_apps_budget_measure_by_its_name(tmp_path):
    assert sweep(tmp_path, "x=choice(1,2,3,4)", "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=4",
                 "hydra.sweeper.budget.measure=tests.toy_app.measure.x_squared", "hydra.sweeper.budget.name=cost",
                 "hydra.sweeper.budget.max=1000") == 0
    rows = json.loads(results(tmp_path, "--format", "json"))
    assert "cost" in rows[0] and "params" not in rows[0]
    by_cost = json.loads(results(tmp_path, "--sort", "cost", "--format", "json"))
    assert [r["cost"] for r in by_cost] == sorted(r["cost"] for r in rows)  # the budget: low first
    by_value = json.loads(results(tmp_path, "--sort", "objective", "--format", "json"))
    assert [r["objective"] for r in by_value] == [4.0, 3.0, 2.0, 1.0]  # maximize: high first
    cheap = json.loads(results(tmp_path, "--max-budget", str(sorted(r["cost"] for r in rows)[1]), "--format", "json"))
    assert len(cheap) == 2
    front = json.loads(results(tmp_path, "--pareto", "--format", "json"))
    assert front and all(set(r) >= {"objective", "cost"} for r in front)


def test_a_named_objective_is_its_own_column_sorted_in_its_direction_and_named_in_the_csv(tmp_path):
    assert sweep(tmp_path, "x=choice(1,2,3)", "returns=dict", "hydra.sweeper.objectives=[v1]",
                 "hydra.sweeper.direction=minimize", "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=3") == 0
    rows = json.loads(results(tmp_path, "--format", "json"))
    assert "objective" not in rows[0] and [r["v1"] for r in rows] == [-3.0, -2.0, -1.0]  # minimize: lowest first
    assert [r["v0"] for r in rows] == [3.0, 2.0, 1.0]  # the other number it returned, kept beside it
    assert [r["v1"] for r in json.loads(results(tmp_path, "--sort", "v0", "--format", "json"))] == [-3.0, -2.0, -1.0]
    by_v1 = json.loads(results(tmp_path, "--sort", "v1", "--format", "json"))
    assert [r["v1"] for r in by_v1] == [-3.0, -2.0, -1.0]  # an objective: in its direction, best first
    header = results(tmp_path, "--format", "csv").splitlines()[0].split(",")
    assert header[:5] == ["rank", "trial", "state", "v1", "v0"]
    assert "study own: minimize v1;" in results(tmp_path)


def test_every_metric_the_app_returns_is_kept_and_shown_aggregated_over_repeats(tmp_path):
    assert sweep(tmp_path, "x=choice(2)", "returns=dict", "hydra.sweeper.objectives=[v0]", "hydra.sweeper.metrics=[v0,v1]",
                 "hydra.sweeper.n_trials=1", "hydra.sweeper.repeats.n=2", "per_seed=[0,1]",
                 "hydra/sweeper/pruner=none") == 0
    (t,) = trials(tmp_path)
    assert t.user_attrs["metric_names"] == ["v0", "v1"] and t.user_attrs["v1"] in (-2.0, -3.0)
    (row,) = json.loads(results(tmp_path, "--format", "json"))
    assert row["v0"] == 2.5 and row["v1"] == -2.5  # both the mean of the repeats, as the objective
    assert results(tmp_path, "--format", "csv").splitlines()[1].split(",")[3:5] == ["2.5", "-2.5"]
    (row,) = json.loads(results(tmp_path, "--sort", "v1", "--format", "json"))  # any metric sorts
    assert row["v1"] == -2.5


def test_only_the_metrics_named_are_kept_and_none_of_a_scalar_return(tmp_path):
    assert sweep(tmp_path, "x=choice(2)", "returns=dict", "hydra.sweeper.objectives=[v0]", "hydra.sweeper.metrics=[v0]",
                 "hydra.sweeper.n_trials=1") == 0
    (t,) = trials(tmp_path)
    assert "v1" not in t.user_attrs and t.user_attrs["metric_names"] == ["v0"]
    assert list(json.loads(results(tmp_path, "--format", "json"))[0])[:4] == ["rank", "trial", "state", "v0"]
    with pytest.raises(ResultsError, match="--sort v1 needs the 'v1' column"):
        results(tmp_path, "--sort", "v1")


def test_repeats_print_like_the_other_numbers(tmp_path):
    assert sweep(tmp_path, "x=choice(5)", "hydra.sweeper.n_trials=1", "hydra.sweeper.repeats.n=2",
                 "per_seed=[0.123456789,0.987654321]", "hydra/sweeper/pruner=none") == 0
    table = results(tmp_path).split("\n\n")[1]
    assert "[5.12, 5.99]" in table and "0.123456789" not in table and "5.123456789" not in table


def test_the_storage_comes_from_sweep_storage_and_the_old_name_is_still_read(tmp_path, monkeypatch):
    from sweeper.results import parse_args

    monkeypatch.delenv("SWEEP_STORAGE", raising=False)
    monkeypatch.setenv("MNIST_SWEEP_STORAGE", "sqlite:///old.db")
    assert parse_args(["own"]).storage == "sqlite:///old.db"
    monkeypatch.setenv("SWEEP_STORAGE", "sqlite:///new.db")
    assert parse_args(["own"]).storage == "sqlite:///new.db"


def test_plots_draw_any_apps_per_step_reports_and_say_what_they_skip(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert sweep(tmp_path, "x=choice(1,2,3)", "steps=4", "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=3") == 0
    capsys.readouterr()
    out = results(tmp_path, "--plots", str(tmp_path / "plots"))
    assert "curves.png" in out.splitlines()[0] and (tmp_path / "plots" / "curves.png").stat().st_size > 0
    assert "accuracy_vs_params.png: skipped" in capsys.readouterr().out


def test_curves_of_any_app_show_every_step_and_parallel_coordinates_get_room(tmp_path, monkeypatch):
    """x * step / 4 from step 1: the first steps' values are on the axes, not clipped as mnist_arch's low
    first epochs are; the parallel-coordinates figure widens with its axes and its title stands clear."""
    pytest.importorskip("matplotlib")
    import matplotlib.figure

    assert sweep(tmp_path, "x=choice(1,2,3)", "optimizer=choice(adam,sgd)", "model.width=choice(3,4)", "seed=choice(0,1)",
                 "steps=4", "hydra.sweeper.n_trials=6") == 0
    saved = {}
    real_save = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda fig, path, **kw: (saved.__setitem__(Path(path).name, fig), real_save(fig, path, **kw))[1])
    results(tmp_path, "--plots", str(tmp_path / "plots"))
    low, high = saved["curves.png"].axes[0].get_ylim()
    values = [v for t in trials(tmp_path) for v in t.intermediate_values.values()]
    assert low < min(values) and high > max(values)  # every step's value, the first ones too
    parallel = saved["parallel.png"]  # the objective and 4 hyperparameters: 5 axes
    assert parallel.get_size_inches()[0] >= 9 and parallel.axes[0].get_title() == "Parallel Coordinate Plot"


def test_plots_of_an_app_that_never_reports_say_the_curves_were_skipped(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert sweep(tmp_path, "x=choice(1,2)", "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=2") == 0
    capsys.readouterr()
    results(tmp_path, "--plots", str(tmp_path / "plots"))
    assert "curves.png: skipped (no trial reported per step" in capsys.readouterr().out
    assert not (tmp_path / "plots" / "curves.png").exists()


# ------------------------------------------------------------------ README's own-app bad-input table


def own_app_rows():
    import re

    from .support import REPO

    text = (REPO / "README.md").read_text()
    table = text.split("<!-- own-app-bad-input-table: begin -->")[1].split("<!-- own-app-bad-input-table: end -->")[0]
    rows = []
    for line in table.strip().splitlines()[2:]:
        args, said = re.match(r"\| `(.*)` \| `(.*)` \|$", line).groups()
        rows.append((args, said))
    return rows


@pytest.fixture(scope="module")
def own_app(tmp_path_factory):
    """README's own app, its files written by the README block (everything before it runs the sweep)."""
    import subprocess

    from .test_any_app import readme_block

    folder = tmp_path_factory.mktemp("own_app")
    script = readme_block("own-app-example")
    subprocess.run(["bash", "-e", "-c", script[:script.index("python my_app/app.py -m")]], cwd=folder, check=True)
    return folder


@pytest.mark.parametrize("args, said", own_app_rows())
def test_every_row_of_readmes_own_app_bad_input_table(own_app, monkeypatch, capsys, args, said):
    import runpy
    import shlex

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.chdir(own_app)
    app = lambda: runpy.run_path(str(own_app / "my_app" / "app.py"), run_name="__main__")
    assert in_process(app, ["my_app/app.py", "-m", *shlex.split(args)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error") and said in err and err.count("\n") == 1, err
    assert not (own_app / "my_app.db").exists() or not optuna.get_all_study_summaries(
        open_storage(f"sqlite:///{own_app}/my_app.db"))  # no trial written
