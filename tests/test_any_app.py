"""The sweeper for apps that are not mnist_arch: hydra-optuna-sweeper's own examples and the toy app,
through the real command line. Each sweep takes seconds (no training)."""

import os
import shutil
import subprocess
import sys

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.trial import TrialState

from sweeper.storage import open_storage

from .support import REPO, run_cli

pytestmark = pytest.mark.slow
optuna.logging.set_verbosity(optuna.logging.WARNING)
EXAMPLES = REPO / "tests" / "optuna_examples"


def run_example(script: str, tmp_path, *args):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), "--multirun", f"hydra.sweep.dir={tmp_path}/sweep",
                           *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=300)
    proc.stderr = proc.stdout  # Hydra logs to stdout, errors go to stderr: read both as one
    return proc


def results(tmp_path):
    return OmegaConf.load(tmp_path / "sweep" / "optimization_results.yaml")


def run_toy(tmp_path, *args):
    proc = run_cli(toy(tmp_path, *args), cwd=tmp_path)
    proc.stderr = proc.stdout + proc.stderr
    return proc


def toy(tmp_path, *args, study="toy"):
    return ["tests.toy_app.app", "-m", *args, f"hydra.sweeper.storage=sqlite:///{tmp_path}/sweeps.db",
            f"hydra.sweeper.study_name={study}", f"hydra.sweep.dir={tmp_path}/sweep"]


def load(tmp_path, study="toy"):
    return optuna.load_study(study_name=study, storage=open_storage(f"sqlite:///{tmp_path}/sweeps.db"))


# ------------------------------------------------------------------ the published plugin's examples


def test_sphere_example_runs_unchanged_with_the_grid_sampler(tmp_path):
    proc = run_example("sphere.py", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = results(tmp_path)
    assert out.name == "optuna" and out.best_value == 0.0 and out.best_params == {"x": 0.0, "y": 0}
    assert "storage: in-memory" in proc.stderr and "trial 19 COMPLETE" in proc.stderr


def test_sphere_example_with_tpe_and_command_line_values(tmp_path):
    proc = run_example("sphere.py", tmp_path, "hydra/sweeper/sampler=tpe", "hydra.sweeper.sampler.seed=123",
                       "x=choice(0, 1, 2)", "y=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = results(tmp_path)
    assert set(out.best_params) == {"x"} and out.best_value == out.best_params.x ** 2


def test_the_grid_sampler_stops_at_its_grid_without_repeating_a_point(tmp_path):
    url = f"sqlite:///{tmp_path}/grid.db"
    proc = run_example("sphere.py", tmp_path, f"hydra.sweeper.storage={url}", "x=choice(-1,1)", "y=range(-1,1)",
                       "hydra.sweeper.n_trials=20")  # a grid of 2 x 2 points
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = optuna.load_study(study_name="sphere", storage=url).get_trials()
    assert sorted((t.params["x"], t.params["y"]) for t in trials) == [(-1, -1), (-1, 0), (1, -1), (1, 0)]
    assert all(t.state == TrialState.COMPLETE for t in trials)


def test_multi_objective_example_returns_a_tuple(tmp_path):
    proc = run_example("multi-objective.py", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    solutions = results(tmp_path).solutions
    assert solutions
    for s in solutions:
        assert s.params.x % 0.5 == 0 and s.params.y % 0.5 == 0
        assert list(s["values"]) == [4 * s.params.x ** 2 + 4 * s.params.y ** 2,
                                     (s.params.x - 5) ** 2 + (s.params.y - 5) ** 2]
        for o in solutions:  # the front holds no dominated trial
            assert not (all(a <= b for a, b in zip(o["values"], s["values"])) and o["values"] != s["values"])


def test_multi_objective_with_objective_names_and_the_motpe_alias(tmp_path):
    proc = run_example("multi-objective.py", tmp_path, "hydra/sweeper/sampler=motpe", "hydra.sweeper.n_trials=5",
                       "hydra.sweeper.objectives=[v0,v1]")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "hydra/sweeper/sampler=motpe is deprecated" in proc.stderr
    assert "study: multi-objective (minimize/minimize v0/v1)" in proc.stderr
    assert results(tmp_path).solutions


def test_multi_objective_example_with_nsgaiii_its_reference_points_and_crossover(tmp_path):
    proc = run_example("multi-objective.py", tmp_path, "hydra/sweeper/sampler=nsgaiii",
                       "hydra.sweeper.sampler.reference_points=[[1,0],[0.5,0.5],[0,1]]",
                       "+hydra.sweeper.sampler.crossover={_target_: optuna.samplers.nsgaii.SBXCrossover, eta: 15}",
                       "hydra.sweeper.sampler.population_size=4", "hydra.sweeper.n_trials=12")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "sampler: NSGAIIISampler" in proc.stderr and "takes no" not in proc.stderr  # every key reached it
    solutions = results(tmp_path).solutions
    assert solutions
    for s in solutions:
        assert list(s["values"]) == [4 * s.params.x ** 2 + 4 * s.params.y ** 2,
                                     (s.params.x - 5) ** 2 + (s.params.y - 5) ** 2]
        for o in solutions:  # the front holds no dominated trial
            assert not (all(a <= b for a, b in zip(o["values"], s["values"])) and o["values"] != s["values"])


def test_custom_search_space_example(tmp_path):
    proc = run_example("custom-search-space-objective.py", tmp_path, "hydra/sweeper/sampler=random",
                       "hydra.sweeper.sampler.seed=123", "max_z_difference_from_x=0.3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    best = results(tmp_path).best_params
    assert abs(best.x - best.z) <= 0.3 and 0 <= best["+w"] <= 1


def test_deprecated_search_space_key_works_with_a_warning(tmp_path):
    proc = run_example("sphere.py", tmp_path, "--config-name=deprecated_search_space")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "hydra.sweeper.search_space is deprecated: use hydra.sweeper.params" in proc.stderr
    best = results(tmp_path).best_params
    assert -1 <= best.x <= 1 and best.y in (0, 1, 2)


@pytest.mark.parametrize("rate, code", [(0.5, 1), (1.0, 1)])  # 1.0: every trial failed, none completed
def test_failing_jobs_end_the_sweep_under_any_failure_rate(tmp_path, rate, code):
    proc = run_example("sphere.py", tmp_path, "hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=123",
                       "hydra.sweeper.n_jobs=2", f"hydra.sweeper.max_failure_rate={rate}", "error=true",
                       "hydra.sweeper.n_trials=5")
    assert proc.returncode == code
    assert "one worker runs the trials" in proc.stderr  # n_jobs=2 on storage: null
    if rate < 1.0:
        assert "1 of 1 trained trials failed, over max_failure_rate=0.5" in proc.stderr
    else:
        assert "5 trained trials failed, as many as n_trials=5: the sweep ends" in proc.stderr
        assert "Error: no trial completed: 5 trained trials failed (last: trial 4: RuntimeError" in proc.stderr
        assert proc.stderr.count("RuntimeError: cfg.error is True") == 5 + 2  # each trial, the cap's line, the error


# ------------------------------------------------------------------ the toy app: a model key, lists, the API


def test_an_app_with_a_model_key_and_list_callbacks_runs_unchanged(tmp_path):
    proc = run_toy(tmp_path, "x=range(0,5)", "model.width=choice(1,2)", "hydra.sweeper.n_trials=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = load(tmp_path).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert all(t.user_attrs["model_width"] == t.params["model.width"] for t in trials)  # read through sweeper.api
    assert "budget: none" in proc.stderr and "trainer.callbacks" not in proc.stderr


def test_an_app_is_pruned_through_the_public_api(tmp_path):
    proc = run_toy(tmp_path, "x=range(0,10)", "steps=4", "hydra.sweeper.n_trials=8",
                       "hydra.sweeper.pruner.n_startup_trials=2", "hydra.sweeper.pruner.n_warmup_steps=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = load(tmp_path).get_trials()
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert pruned and len(pruned) + len(complete) == 8
    for t in pruned:
        step = t.user_attrs["pruned_at_step"]
        assert 1 <= step < 4 and max(t.intermediate_values) == step
    for t in complete:
        assert t.intermediate_values == {s: t.params["x"] * s / 4 for s in range(1, 5)}


@pytest.mark.parametrize("returns, extra", [("tuple", []), ("dict", ["hydra.sweeper.objectives=[v0,v1]"])])
def test_tuple_and_dict_returns_give_both_objectives(tmp_path, returns, extra):
    proc = run_toy(tmp_path, "x=range(0,5)", f"returns={returns}", "hydra.sweeper.direction=[maximize,maximize]",
                       "hydra.sweeper.n_trials=3", *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for t in load(tmp_path).get_trials():
        assert t.values == [t.params["x"], -t.params["x"]]


def test_a_dict_return_without_objective_names_fails_with_the_way_out(tmp_path):
    proc = run_toy(tmp_path, "x=range(0,5)", "returns=dict", "hydra.sweeper.n_trials=1",
                       "hydra.sweeper.max_failure_rate=1.0")
    assert proc.returncode == 1 and "no trial completed: 1 trained trial failed" in proc.stderr
    (t,) = load(tmp_path).get_trials()
    assert t.state == TrialState.FAIL and "name the values to optimise with hydra.sweeper.objectives" in t.user_attrs["error"]


def test_a_budget_measure_rejects_trials_of_any_app_untrained(tmp_path):
    proc = run_toy(tmp_path, "x=range(0,6)", "hydra.sweeper.n_trials=3",
                       "hydra.sweeper.budget.measure=tests.toy_app.measure.x_squared", "hydra.sweeper.budget.max=9",
                       "hydra.sweeper.budget.name=x2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = load(tmp_path).get_trials()
    rejected = [t for t in trials if t.user_attrs.get("rejected")]
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3 and rejected
    for t in rejected:
        assert t.params["x"] > 3 and t.user_attrs["x2"] == t.params["x"] ** 2
        assert t.user_attrs["reason"] == f"x2={t.params['x'] ** 2} > hydra.sweeper.budget.max=9"
        assert not (tmp_path / "sweep" / str(t.number)).exists()


def test_a_study_resumed_over_another_search_space_is_refused(tmp_path):
    assert run_toy(tmp_path, "x=range(0,3)", "hydra.sweeper.n_trials=1").returncode == 0
    proc = run_toy(tmp_path, "x=range(0,10)", "hydra.sweeper.n_trials=2")
    assert proc.returncode == 1
    line = ("study 'toy' was begun over the search space {x: int[0,2]}, not {x: int[0,9]}: give a new "
            "hydra.sweeper.study_name, or set hydra.sweeper.allow_search_space_change=true to go on")
    assert line in proc.stderr and "Traceback" not in proc.stderr
    assert len(load(tmp_path).get_trials()) == 1
    proc = run_toy(tmp_path, "x=range(0,10)", "hydra.sweeper.n_trials=2",
                       "hydra.sweeper.allow_search_space_change=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(load(tmp_path).get_trials()) == 2


def test_a_null_study_name_is_the_apps_job_name_and_resumes(tmp_path):
    args = ["tests.toy_app.app", "-m", "x=range(0,5)", "hydra.sweeper.n_trials=1", "hydra.sweeper.study_name=null",
            f"hydra.sweeper.storage=sqlite:///{tmp_path}/sweeps.db", f"hydra.sweep.dir={tmp_path}/sweep"]
    assert run_cli(args, cwd=tmp_path).returncode == 0
    proc = run_cli([*args[:3], "hydra.sweeper.n_trials=2", *args[4:]], cwd=tmp_path)
    proc.stderr += proc.stdout
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "study: app (maximize objective), 1 of 2 trained trials done" in proc.stderr
    trials = load(tmp_path, "app").get_trials()  # (a point proposed again is recorded, never trained)
    assert sum(t.user_attrs.get("launched", False) for t in trials) == 2 and len({t.params["x"] for t in trials}) >= 2


def test_plugin_discovery_and_a_plain_run_load_no_optuna_sqlalchemy_or_torch(tmp_path):
    script = (
        "import sys, runpy\n"
        "from hydra.core.plugins import Plugins\n"
        "from hydra.plugins.sweeper import Sweeper\n"
        "assert 'BudgetOptunaSweeper' in [p.__name__ for p in Plugins.instance().discover(Sweeper)]\n"
        f"sys.argv = ['app', 'x=1', 'hydra.run.dir={tmp_path}/run']\n"
        f"runpy.run_path({str(REPO / 'tests' / 'toy_app' / 'app.py')!r}, run_name='__main__')\n"
        "import sweeper.reporter  # what mnist_arch's trainer config instantiates in a plain run\n"
        "print(sorted(m for m in ('optuna', 'sqlalchemy', 'torch', 'mnist_arch') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def readme_block(name: str) -> str:
    """The bash block README.md marks ``<!-- name: begin -->`` ... ``<!-- name: end -->``."""
    text = (REPO / "README.md").read_text()
    block = text.split(f"<!-- {name}: begin -->")[1].split(f"<!-- {name}: end -->")[0]
    return block.split("```bash\n", 1)[1].rsplit("```", 1)[0]


def run_own_app_example(tmp_path, env):
    """README's own-app block, run as written in ``tmp_path``; the checks of what it must leave."""
    env = dict(env)
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.run(["bash", "-e", "-c", readme_block("own-app-example")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    study = optuna.load_study(study_name="my_app", storage=open_storage(f"sqlite:///{tmp_path}/my_app.db"))
    trials = study.get_trials()
    trained = [t for t in trials if t.user_attrs.get("launched")]
    assert len(trained) == 12 and all(t.user_attrs["size"] <= 40000 for t in trained)
    assert all(t.user_attrs["size"] > 40000 for t in trials if t.user_attrs.get("rejected"))
    assert any(t.state == TrialState.PRUNED and t.user_attrs.get("pruned_at_step") for t in trials)
    assert "study my_app: minimize objective" in proc.stdout and "rank  trial  state" in proc.stdout
    exported = (tmp_path / "my_app" / "conf" / "experiment" / "best.yaml").read_text()
    best = study.best_trial
    assert f"trial {best.number} (complete" in exported and "# Run: python my_app/app.py +experiment=best" in exported
    assert f"lr: {best.params['lr']}" in exported and f"width: {best.params['width']}" in exported
    return proc


@pytest.fixture(scope="module")
def own_app_example(tmp_path_factory):
    """A folder where README's own-app block has run as written (and passed its checks): once for this module."""
    folder = tmp_path_factory.mktemp("own_app")
    run_own_app_example(folder, {**os.environ, "PYTHONPATH": str(REPO)})
    return folder


def run_after_own_app_example(tmp_path, example, name: str) -> subprocess.CompletedProcess:
    """README's block ``name``, run as written in a copy of the folder where the own-app block ran."""
    shutil.copytree(example, tmp_path, dirs_exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.run(["bash", "-e", "-c", readme_block(name)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc


def test_the_readme_example_app_runs_as_written(own_app_example):
    assert (own_app_example / "my_app.db").is_file()  # run_own_app_example checked what it left


def test_the_readme_repeats_example_runs_on_the_own_app_as_written(tmp_path, own_app_example):
    proc = run_after_own_app_example(tmp_path, own_app_example, "repeats-example")
    study = optuna.load_study(study_name="my_app_seeds", storage=open_storage(f"sqlite:///{tmp_path}/my_app.db"))
    trained = [t for t in study.get_trials() if t.user_attrs.get("launched")]
    assert len(trained) == 6 and all(t.user_attrs["repeats_n"] == 3 for t in trained)
    complete = [t for t in trained if t.state == TrialState.COMPLETE]
    assert complete and all(t.value == max(t.user_attrs["repeat_values"]) for t in complete)  # scored by the worst
    assert "study my_app_seeds: minimize objective" in proc.stdout and "repeats" in proc.stdout


def test_the_readme_resume_example_stops_a_trial_and_runs_it_again_from_its_checkpoint(tmp_path, own_app_example):
    proc = run_after_own_app_example(tmp_path, own_app_example, "resume-example")
    trials = optuna.load_study(study_name="my_app_stop", storage=open_storage(f"sqlite:///{tmp_path}/my_app.db")).trials
    (stopped,) = [t for t in trials if t.user_attrs.get("interrupted")]  # trials before it may be over budget
    (resumed,) = [t for t in trials if t.user_attrs.get("continues") == stopped.number]
    assert (f"interrupted: 0 trained trials kept, trial {stopped.number} queued to run again first with its checkpoint "
            "of step 6; the same command resumes") in proc.stderr
    assert f"trial {resumed.number} carries on from trial {stopped.number}: its job resumes from its checkpoint of step 6" in proc.stdout
    assert stopped.state == TrialState.FAIL and sorted(stopped.intermediate_values) == list(range(1, 7))
    assert resumed.state == TrialState.COMPLETE and resumed.params == stopped.params
    assert sorted(resumed.intermediate_values) == list(range(1, 11))  # steps 1-6 carried, 7-10 its own
    assert {s: resumed.intermediate_values[s] for s in range(1, 7)} == stopped.intermediate_values
    assert resumed.value == resumed.intermediate_values[10]
