"""Repeats and racing (hydra.sweeper.repeats): the rule in isolation, then real sweeps of the toy app in-process.

The toy app adds ``per_seed[seed]`` to its value, so every repeat's value is known in advance.
The sweeps run through Hydra's real command-line entry point in this process (a few seconds
each), storage in a SQLite file under tmp_path.
"""

from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.trial import TrialState

from sweeper.api import SweepTrial
from sweeper.errors import SweepError
from sweeper.repeats import Repeats
from sweeper.storage import open_storage
from sweeper.table import trial_rows

from .support import in_process

optuna.logging.set_verbosity(optuna.logging.WARNING)


def repeats(n=3, aggregate="min", race=True, bound=None, values=None, key="seed", config_seed=5, fixed=None,
            searched=("x",), directions=("maximize",)):
    cfg = OmegaConf.create({"n": n, "key": key, "values": values, "aggregate": aggregate, "race": race, "bound": bound})
    config = OmegaConf.create({"seed": config_seed, "hydra": {"sweep": {"subdir": "${hydra.job.num}"}}})
    return Repeats.from_config(cfg, config, fixed or {}, list(searched), list(directions))


# ------------------------------------------------------------------ the rule


@pytest.mark.parametrize("aggregate, expected", [("mean", [4.0, -4.0]), ("min", [2.0, -5.0]), ("max", [5.0, -2.0]),
                                                 ("median", [5.0, -5.0])])
def test_each_objective_is_aggregated_on_its_own(aggregate, expected):
    per_repeat = [[5.0, -5.0], [2.0, -2.0], [5.0, -5.0]]
    made = repeats(aggregate=aggregate, race=False, directions=("maximize", "minimize"))
    assert made.aggregated(per_repeat) == expected


def test_default_values_count_from_the_configs_key_and_a_fixed_override_wins():
    assert repeats().values == [5, 6, 7]
    assert repeats(fixed={"seed": "11"}).values == [11, 12, 13]
    assert repeats(values=[3, 1, 2]).values == [3, 1, 2]


def test_a_repeats_job_sets_its_key_once_and_gets_its_own_folder():
    made = repeats(values=[11, 12, 13])
    assert made.job_overrides(["x=1", "seed=4", "+a=b"], 2) == [
        "x=1", "+a=b", "seed=13", "hydra.sweep.subdir='${hydra.job.num}/repeat_2'"]
    assert repeats(n=1).job_overrides(["x=1", "seed=4"], 0) == ["x=1", "seed=4"]  # no repeats: as given
    # a key the app's config lacks, added by the user's "+": each repeat adds it the same way
    assert made.job_overrides(["x=1", "+seed=0"], 0)[:2] == ["x=1", "+seed=11"]
    assert made.job_overrides(["++seed=0"], 1)[0] == "++seed=12"
    # the key is what comes before the first "=": a value holding "=" is still the key's
    assert made.job_overrides(["seed='a=b'", "x=1"], 0)[:2] == ["x=1", "seed=11"]
    capital = Repeats(2, "Xs", [1, 2], "mean", False, None, None)  # any key name, whatever letter it begins with
    assert capital.job_overrides(["Xs=0", "x=1"], 1) == ["x=1", "Xs=2"]


def test_a_repeats_folder_under_a_subdir_with_quotes_and_backslashes_reads_back_as_written():
    """Hydra's grammar reads a backslash as written except in a run before a quote or at the end: a subdir of
    ``a\\b`` once came back as ``a\\\\b`` (every backslash was doubled)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from sweeper.repeats import single_quoted

    parser = OverridesParser.create()
    for subdir in ("${hydra.job.num}", "a\\b", "a\\\\b", "it's", "a\\'b", "a\\\\'b", "end\\", "'", "\\", ""):
        made = Repeats(2, "seed", [1, 2], "mean", False, None, subdir)
        (line,) = made.job_overrides([], 1)[1:]
        assert line.startswith("hydra.sweep.subdir='")
        (parsed,) = parser.parse_overrides([line])
        assert parsed.value() == subdir + "/repeat_1", subdir
        (parsed,) = parser.parse_overrides([f"k={single_quoted(subdir)}"])  # the end of the string too
        assert parsed.value() == subdir, subdir
    assert single_quoted("a\\b'c") == "'a\\b\\'c'"


def test_a_trials_finished_repeats_are_read_back_a_list_per_repeat():
    from sweeper.repeats import REPEAT_VALUES_ATTR, stored_values

    assert stored_values({REPEAT_VALUES_ATTR: [[1.0, 2.0], (3.0, 4.0), 5.0]}) == [[1.0, 2.0], [3.0, 4.0], [5.0]]
    assert stored_values({REPEAT_VALUES_ATTR: None}) == stored_values({}) == []


def test_min_under_maximize_races_out_on_one_repeat_below_the_best_and_keeps_a_tie():
    made = repeats(aggregate="min")
    assert made.raced_out([4.9], incumbent=5.0, direction="maximize")
    assert not made.raced_out([5.0], incumbent=5.0, direction="maximize")  # can still equal the best
    assert not made.raced_out([9.0, 5.0], incumbent=5.0, direction="maximize")
    assert not made.raced_out([1.0], incumbent=None, direction="maximize")  # nothing completed yet
    assert not made.raced_out([1.0, 1.0, 1.0], incumbent=5.0, direction="maximize")  # all ran: it completes
    assert repeats(aggregate="max", directions=("minimize",)).raced_out([5.1], incumbent=5.0, direction="minimize")
    assert not repeats(aggregate="max", directions=("minimize",)).raced_out([5.0], incumbent=5.0, direction="minimize")  # a tie


def test_mean_races_only_when_even_the_bound_on_every_repeat_left_cannot_reach_the_best():
    made = repeats(aggregate="mean", bound=100.0)
    # (97 + 100 + 100) / 3 = 99.0 < 99.1: out after one; (98 + 100 + 100) / 3 = 99.33 can still reach it
    assert made.raced_out([97.0], incumbent=99.1, direction="maximize")
    assert not made.raced_out([98.0], incumbent=99.1, direction="maximize")
    assert made.raced_out([99.0, 98.0], incumbent=99.1, direction="maximize")  # at best (99 + 98 + 100) / 3 = 99.0
    assert not made.raced_out([99.0, 98.0], incumbent=98.9, direction="maximize")


def test_median_races_without_a_bound_once_more_than_half_the_repeats_ran():
    made = repeats(aggregate="median")
    assert not made.raced_out([1.0], incumbent=5.0, direction="maximize")  # two more could be anything
    assert made.raced_out([1.0, 4.0], incumbent=5.0, direction="maximize")  # median <= 4 whatever comes
    assert not made.raced_out([1.0, 6.0], incumbent=5.0, direction="maximize")


@pytest.mark.parametrize("kwargs, message", [
    (dict(n=0), "hydra.sweeper.repeats.n=0 is out of range: it must be >= 1"),
    (dict(aggregate="avg"), "hydra.sweeper.repeats.aggregate='avg' is not one of: mean, min, max, median"),
    (dict(searched=("x", "seed")), "hydra.sweeper.repeats.key=seed is also searched: a repeat's seed must be the "
                                   "sweeper's to set"),
    (dict(values=[1, 2]), "hydra.sweeper.repeats.values=[1, 2] must be 3 distinct values (repeats.n=3)"),
    (dict(values=[1, 1, 2]), "hydra.sweeper.repeats.values=[1, 1, 2] must be 3 distinct values (repeats.n=3)"),
    (dict(config_seed="abc"), "hydra.sweeper.repeats: the config's seed='abc' is not an integer to count from; give "
                              "hydra.sweeper.repeats.values (a list of 3)"),
    (dict(directions=("maximize", "minimize")), "hydra.sweeper.repeats.race needs a single objective: a "
                                                "multi-objective study has no one best trial to race against"),
    (dict(aggregate="mean"), "hydra.sweeper.repeats.race with aggregate=mean under maximize can never stop a trial "
                             "without hydra.sweeper.repeats.bound (the best value one repeat can reach, e.g. 100 for "
                             "an accuracy in percent)"),
    (dict(aggregate="max"), "hydra.sweeper.repeats.race with aggregate=max under maximize can never stop a trial "
                            "without hydra.sweeper.repeats.bound (the best value one repeat can reach, e.g. 100 for "
                            "an accuracy in percent)"),
    (dict(aggregate="min", directions=("minimize",)), "hydra.sweeper.repeats.race with aggregate=min under minimize "
                                                      "can never stop a trial without hydra.sweeper.repeats.bound (the "
                                                      "best value one repeat can reach, e.g. 100 for an accuracy in "
                                                      "percent)"),
])
def test_bad_repeat_settings_are_one_line(kwargs, message):
    with pytest.raises(SweepError) as info:
        repeats(**kwargs)
    assert str(info.value) == message


def test_one_repeat_is_no_repeats_whatever_else_is_set():
    """n=1: nothing to race or count, and the key is the app's own (even a searched one); the rest kept as given."""
    made = repeats(n=1, aggregate="max", race=True, bound=3.0, searched=("seed",), directions=("maximize", "minimize"))
    assert made == Repeats(1, "seed", [], "max", False, 3.0, "${hydra.job.num}")
    assert not made.active and made.describe() == "none"


def test_only_the_first_repeat_reports_to_the_pruner():
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=1e9))
    trial = study.ask()
    trial.set_user_attr("repeat", 1)
    later = SweepTrial(study, trial.number)
    assert later.repeat == 1 and later.report(1.0, 1) is False
    assert study.trials[0].intermediate_values == {}
    trial.set_user_attr("repeat", 0)
    assert SweepTrial(study, trial.number).report(1.0, 1) is True


# ------------------------------------------------------------------ real sweeps of the toy app, in this process


def sweep(tmp_path: Path, *overrides: str) -> int:
    """One ``python -m tests.toy_app.app -m ...`` in this process; its exit status (0 when it returned)."""
    from tests.toy_app.app import main

    return in_process(main, ["app", "-m", f"hydra.sweeper.storage=sqlite:///{tmp_path}/sweeps.db",
                             f"hydra.sweep.dir={tmp_path}/sweep", "hydra.sweeper.study_name=repeats",
                             "hydra/sweeper/pruner=none", "per_seed=[0,-3,0]", *overrides])


def trials(tmp_path):
    return optuna.load_study(study_name="repeats", storage=open_storage(f"sqlite:///{tmp_path}/sweeps.db")).trials


def test_a_trials_value_is_the_aggregate_of_its_repeats_each_its_own_job(tmp_path):
    assert sweep(tmp_path, "x=choice(5)", "hydra.sweeper.n_trials=1", "hydra.sweeper.repeats.n=3",
                 "hydra.sweeper.repeats.aggregate=mean") == 0
    (t,) = trials(tmp_path)
    assert t.state == TrialState.COMPLETE and t.value == pytest.approx(4.0)  # mean of 5, 2, 5
    assert t.user_attrs["repeat_values"] == [5.0, 2.0, 5.0] and t.user_attrs["repeats_run"] == 3
    assert [a["seed_run"] for a in t.user_attrs["repeat_attrs"]] == [0, 1, 2]
    assert len(t.user_attrs["repeat_seconds"]) == 3
    assert sorted(p.name for p in (tmp_path / "sweep" / "0").iterdir()) == ["repeat_0", "repeat_1", "repeat_2"]


def test_a_candidate_whose_first_repeat_falls_below_the_best_stops_after_one(tmp_path):
    common = ["hydra.sweeper.repeats.n=3", "hydra.sweeper.repeats.aggregate=min", "hydra.sweeper.repeats.race=true",
              "hydra.sweeper.allow_search_space_change=true"]
    assert sweep(tmp_path, "x=range(5,6)", "hydra.sweeper.n_trials=1", *common) == 0  # 5, 2, 5: the best is 2
    assert sweep(tmp_path, "x=range(0,2)", "hydra.sweeper.n_trials=3", *common) == 0
    best, *others = trials(tmp_path)
    raced = [t for t in others if t.user_attrs.get("launched")]  # (TPE may propose a point twice: never trained)
    assert best.value == 2.0 and best.user_attrs["repeats_run"] == 3
    assert [(t.state, t.user_attrs["raced_out_after"], t.user_attrs["repeat_values"]) for t in raced] == [
        (TrialState.PRUNED, 1, [float(t.params["x"])]) for t in raced]
    assert {t.params["x"] for t in raced} == {0, 1}
    for t in raced:  # one job each
        assert [p.name for p in (tmp_path / "sweep" / str(t.number)).iterdir()] == ["repeat_0"]


def test_a_sweep_interrupted_between_repeats_resumes_without_losing_or_repeating_one(tmp_path, capsys):
    common = ["x=choice(5)", "hydra.sweeper.n_trials=1", "hydra.sweeper.repeats.n=3", "hydra.sweeper.repeats.aggregate=min"]
    assert sweep(tmp_path, *common, "interrupt_on_seed=1") == 130  # Ctrl-C in the second repeat
    assert capsys.readouterr().err.endswith("interrupted: 0 trained trials kept, trial 0 queued to run again first with "
                                            "its 1 finished repeat; the same command resumes\n")
    cut, queued = trials(tmp_path)
    assert cut.state == TrialState.FAIL and cut.user_attrs["error"] == "interrupted"
    assert cut.user_attrs["repeat_values"] == [5.0]
    assert queued.state == TrialState.WAITING and queued.system_attrs["fixed_params"] == cut.params  # its finished repeat, queued to go on
    assert queued.user_attrs["repeat_values"] == [5.0] and queued.user_attrs["continues"] == 0
    assert sweep(tmp_path, *common) == 0  # the same command resumes
    cut, resumed = trials(tmp_path)
    assert resumed.state == TrialState.COMPLETE and resumed.value == 2.0 and resumed.user_attrs["continues"] == 0
    assert resumed.user_attrs["repeat_values"] == [5.0, 2.0, 5.0]
    assert [a["seed_run"] for a in resumed.user_attrs["repeat_attrs"]] == [0, 1, 2]
    # repeat 0 ran once (in the cut trial); the resume ran repeats 1 and 2 only
    assert sorted(p.name for p in (tmp_path / "sweep" / "1").iterdir()) == ["repeat_1", "repeat_2"]
    study = optuna.load_study(study_name="repeats", storage=open_storage(f"sqlite:///{tmp_path}/sweeps.db"))
    notes = {r["trial"]: r["note"] for r in trial_rows(study)}
    assert notes == {0: "interrupted; run again as trial 1", 1: None}  # the table links the cut trial to its carry-on


def test_n_complete_trials_ends_the_study_when_that_many_completed(tmp_path):
    half = ",".join(map(str, range(0, 100, 2)))  # even x fail: about half the trials complete
    assert sweep(tmp_path, "x=range(0,100)", f"nan_on=[{half}]", "hydra.sweeper.n_trials=100",
                 "hydra.sweeper.max_failure_rate=1.0", "hydra.sweeper.n_complete_trials=3") == 0
    done = trials(tmp_path)
    assert sum(t.state == TrialState.COMPLETE for t in done) == 3
    assert done[-1].state == TrialState.COMPLETE  # it ended at the third completed trial, far before n_trials


@pytest.mark.parametrize("aggregate, bound", [("min", None), ("median", None), ("mean", 99.5)])
def test_racing_is_exact_it_picks_what_the_full_repeats_pick_with_fewer_runs(aggregate, bound):
    """benchmarks/repeats.py's simulated searches: raced and unraced agree on every winner (no value passes bound)."""
    import random

    from benchmarks.repeats import draw, make_repeats, search

    mus = [99.30 + 0.15 * k / 19 for k in range(20)]
    rng = random.Random(1)
    worlds = [draw(20, 3, 0.035, rng) for _ in range(300)]
    worlds = [(order, [[min(e, bound - mus[i] - 1e-6) if bound else e for e in row] for i, row in enumerate(noise)])
              for order, noise in worlds]  # keep every run under the bound, as the guarantee assumes
    full = [search(mus, w, make_repeats(3, aggregate, False)) for w in worlds]
    raced = [search(mus, w, make_repeats(3, aggregate, True, bound)) for w in worlds]
    assert [r["winner"] for r in raced] == [r["winner"] for r in full]
    assert sum(r["runs"] for r in raced) < sum(r["runs"] for r in full)


@pytest.mark.parametrize("n", [1, 2])
def test_a_multi_objective_study_runs_with_and_without_repeats_each_objective_aggregated(tmp_path, n):
    assert sweep(tmp_path, "x=range(5,6)", "returns=tuple", "hydra.sweeper.n_trials=1", "hydra.sweeper.direction=[maximize,minimize]",
                 f"hydra.sweeper.repeats.n={n}", "hydra.sweeper.repeats.aggregate=mean") == 0
    (t,) = trials(tmp_path)
    # the toy returns (x + per_seed[seed], -(x + per_seed[seed])); per_seed = [0, -3, 0]
    assert t.values == ([5.0, -5.0] if n == 1 else [3.5, -3.5])
    if n == 2:
        assert t.user_attrs["repeat_values"] == [[5.0, -5.0], [2.0, -2.0]]


@pytest.mark.parametrize("direction, aggregate", [("maximize", "min"), ("minimize", "max")])
def test_racing_compares_against_the_best_completed_trial_not_the_worst(tmp_path, direction, aggregate):
    """Two completed trials, 5 and 1; a candidate at 3 is between them: below the best under maximize
    (5), above it under minimize (1), so it is raced out after its first repeat either way. Against the
    worst completed trial it would run all three."""
    common = ["per_seed=[]", f"hydra.sweeper.direction={direction}", "hydra.sweeper.repeats.n=3",
              f"hydra.sweeper.repeats.aggregate={aggregate}", "hydra.sweeper.repeats.race=true",
              "hydra.sweeper.allow_search_space_change=true"]
    first, second = ("x=range(1,2)", "x=range(5,6)") if direction == "maximize" else ("x=range(5,6)", "x=range(1,2)")
    assert sweep(tmp_path, first, "hydra.sweeper.n_trials=1", *common) == 0  # the worse first: nothing to race
    assert sweep(tmp_path, second, "hydra.sweeper.n_trials=2", *common) == 0  # the better one completes too
    assert sweep(tmp_path, "x=range(3,4)", "hydra.sweeper.n_trials=3", *common) == 0
    done = trials(tmp_path)
    assert [(t.state, t.user_attrs["repeats_run"]) for t in done[:2]] == [(TrialState.COMPLETE, 3)] * 2
    candidate = done[-1]
    assert candidate.params["x"] == 3
    assert candidate.state == TrialState.PRUNED and candidate.user_attrs["raced_out_after"] == 1
    assert candidate.user_attrs["repeat_values"] == [3.0]


def test_under_repeats_the_median_is_taken_over_every_trial_whose_first_repeat_ran_all_its_steps():
    from optuna.trial import create_trial

    from sweeper.samplers import FirstRepeatsPruner, make_pruner

    def past(state, value_at_8, **attrs):
        return create_trial(state=state, value=value_at_8 if state == TrialState.COMPLETE else None,
                            intermediate_values={8: value_at_8}, user_attrs=attrs)

    study = optuna.create_study(direction="maximize")
    for trial in [past(TrialState.COMPLETE, 99.5, repeats_run=3), past(TrialState.COMPLETE, 99.4, repeats_run=3),
                  *[past(TrialState.PRUNED, v, repeats_run=1, raced_out_after=1) for v in (99.0, 99.1, 99.2)],
                  past(TrialState.RUNNING, 99.15, repeats_run=1),  # its first repeat done, the second running
                  *[past(TrialState.PRUNED, 99.9, pruned_at_step=8) for _ in range(3)],  # cut by the pruner
                  *[past(TrialState.RUNNING, 99.9) for _ in range(3)],  # its first repeat running (no repeats_run yet)
                  *[past(TrialState.FAIL, 99.9, repeats_run=1) for _ in range(3)]]:  # a failed one's points run again
        study.add_trial(trial)
    trial = study.ask()
    trial.report(99.3, 8)
    frozen = study._storage.get_trial(trial._trial_id)
    median = {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 1, "n_warmup_steps": 0}
    plain, repeated = make_pruner(OmegaConf.create(median)), make_pruner(OmegaConf.create(median), repeated=True)
    assert type(plain) is optuna.pruners.MedianPruner and isinstance(repeated, FirstRepeatsPruner)
    assert bool(plain.prune(study, frozen)) is True  # the median of the two complete trials, 99.45
    assert bool(repeated.prune(study, frozen)) is False  # of 99.5, 99.4, 99.0, 99.1, 99.2 and 99.15: 99.175
    # (any group of three 99.9s above counted would lift the median to 99.4)
    trial.report(99.1, 9)  # its best so far is still 99.3: the pool has nothing at step 9
    assert bool(repeated.prune(study, study._storage.get_trial(trial._trial_id))) is False
    # what the pruner is shown as the study; other questions are the study's own answers
    from sweeper.samplers import _FirstRepeatsAsComplete

    seen = _FirstRepeatsAsComplete(study)
    assert [t.number for t in seen.get_trials()] == [t.number for t in study.get_trials()]
    assert [t.number for t in seen.get_trials(states=(TrialState.PRUNED,))] == list(range(2, 5)) + list(range(6, 9))
    assert [t.number for t in seen.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))] == [0, 1, 2, 3, 4, 5]
    assert seen.direction == study.direction and seen.study_name == study.study_name
    hyperband = OmegaConf.create({"_target_": "optuna.pruners.HyperbandPruner"})
    assert type(make_pruner(hyperband, repeated=True)) is optuna.pruners.HyperbandPruner  # samplers look for its type


def test_the_sweeps_start_names_its_repeats_as_configured():
    assert repeats(n=1).describe() == "none"
    assert repeats(race=False).describe() == "3 per trial (seed = 5, 6, 7), min"
    assert repeats(aggregate="mean", bound=100).describe() == "3 per trial (seed = 5, 6, 7), mean, raced (bound 100)"
    assert repeats(n=2, values=[11, 13]).describe() == "2 per trial (seed = 11, 13), min, raced"
