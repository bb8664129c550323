"""Interrupts, resumes and runs side by side lose nothing and repeat nothing (real processes, real signals).

The slow ones run real subprocesses; the fast ones signal a toy sweep running in this process. Each test waits for conditions (trials RUNNING in the database, processes gone), never for a
fixed time, so it holds on a busy machine.
"""

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from sweeper.storage import StorageError, open_storage_readonly

from .support import REPO, run_cli

optuna.logging.set_verbosity(optuna.logging.WARNING)


def wait_for(what: str, predicate, timeout: float = 120.0):
    """Poll ``predicate`` until it is true; a predicate that raises is a bug and is reported as one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def toy_args(tmp_path, study, *extra):
    return ["tests.toy_app.app", "-m", "x=range(0,1000)", f"hydra.sweeper.storage=sqlite:///{tmp_path}/sweeps.db",
            f"hydra.sweeper.study_name={study}", f"hydra.sweep.dir={tmp_path}/sweep", *extra]


def trials(tmp_path, study):
    """The study's trials, read the way mnist-results reads (never creating the schema, so never racing the
    sweep's own creation); none while the sweep has not created its database, tables or study yet."""
    try:
        storage = open_storage_readonly(f"sqlite:///{tmp_path}/sweeps.db")
        return optuna.load_study(study_name=study, storage=storage).get_trials()
    except (StorageError, KeyError):  # no file, no tables or no study yet
        return []


def start(args, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.Popen([sys.executable, "-m", *args], cwd=tmp_path, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def processes_with(marker: str):
    out = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def running_launched(tmp_path, study, n):
    return sum(t.state == TrialState.RUNNING and bool(t.user_attrs.get("launched")) for t in trials(tmp_path, study)) >= n


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_sweep_records_its_trials_and_leaves_no_worker(tmp_path, sig, code):
    study = f"intr-{sig.name}-{tmp_path.name}"
    settings = ["hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2", "hydra.sweeper.grace_period=3600"]
    proc = start(toy_args(tmp_path, study, "sleep=300", *settings), tmp_path)
    try:
        wait_for("both workers' trials to run", lambda: running_launched(tmp_path, study, 2))
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)  # Ctrl-C: the whole process group
        else:
            os.kill(proc.pid, sig)  # SIGTERM to the main process only: its worker must not outlive it
        out, err = proc.communicate(timeout=120)
    except BaseException:
        for pid in processes_with(str(tmp_path)):  # a failed test leaves nothing running
            os.kill(pid, signal.SIGKILL)
        raise
    assert proc.returncode == code
    lines = [line for line in (out + err).splitlines() if line.startswith("interrupted")]
    assert len(lines) == 1 and lines[0].startswith("interrupted: 0 trained trials kept, trial ")
    assert lines[0].count("queued to run again first") == 2 and lines[0].endswith("; the same command resumes")
    assert "Traceback" not in out + err and "KeyboardInterrupt" not in out + err
    wait_for("the worker process to end", lambda: not processes_with(str(tmp_path)), timeout=60)
    recorded = trials(tmp_path, study)
    failed = [t for t in recorded if t.state == TrialState.FAIL]
    assert len(failed) == 2 and all(t.user_attrs["error"] == "interrupted" for t in failed)
    queued = [t for t in recorded if t.state == TrialState.WAITING]  # their points run again first
    assert sorted((t.user_attrs["retry_of"], t.system_attrs["fixed_params"]) for t in queued) == sorted((t.number, t.params) for t in failed)

    # the same command resumes at once: nothing waits for a grace period, nothing interrupted counts
    started = time.monotonic()
    again = run_cli(toy_args(tmp_path, study, "sleep=0", *settings), cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "0 of 4 trained trials done" in again.stdout + again.stderr
    assert time.monotonic() - started < 600  # nothing waited for the 3600 s grace period (load alone cannot take 600 s)
    done = [t for t in trials(tmp_path, study) if t.state == TrialState.COMPLETE]
    assert len(done) == 4


@pytest.mark.slow
def test_interrupts_at_random_moments_leave_no_trial_running_and_the_resume_finishes_exactly_n_trials(tmp_path):
    """Ctrl-C to the process group, or SIGTERM to the sweep, at random moments of an n_jobs=2 sweep of
    short trials: while workers start, claim, run, tell. After each, no trial is RUNNING and nothing
    speaks of an outage or a traceback; then the same command finishes exactly n_trials."""
    import random

    rng = random.Random(int(os.environ.get("INTERRUPT_TEST_SEED", "20261203")))  # another seed: other moments
    study = f"random-{tmp_path.name}"
    # 4 rounds of at most ~3 s each, 2 trials a second at most: the sweep of 40 cannot finish before its last interrupt
    args = toy_args(tmp_path, study, "sleep=1.0", "hydra.sweeper.n_trials=40", "hydra.sweeper.n_jobs=2")
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}  # the header in the log as it is printed
    env.pop("HYDRA_FULL_ERROR", None)
    for round_ in range(4):
        log = tmp_path / f"round{round_}.log"
        with open(log, "w") as sink:
            proc = subprocess.Popen([sys.executable, "-m", *args], cwd=tmp_path, env=env, start_new_session=True,
                                    stdout=sink, stderr=subprocess.STDOUT, text=True)
        try:
            # the sweep has started once its header names the study; then a random moment of its first seconds
            wait_for("the sweep to start", lambda: "[HYDRA] study: " in log.read_text() or proc.poll() is not None)
            time.sleep(rng.uniform(0.0, 3.0))
            sig = signal.SIGINT if round_ % 2 == 0 else signal.SIGTERM
            if sig == signal.SIGINT:
                os.killpg(proc.pid, sig)
            else:
                os.kill(proc.pid, sig)
            proc.wait(timeout=300)
            out, err = "", log.read_text()
        except BaseException:
            for pid in processes_with(str(tmp_path)):
                os.kill(pid, signal.SIGKILL)
            raise
        assert proc.returncode == 128 + sig, (round_, proc.returncode, err[-3000:])
        assert "Traceback" not in out + err and "outage" not in out + err, (round_, err[-3000:])
        wait_for("the workers to end", lambda: not processes_with(str(tmp_path)), timeout=120)
        left = [(t.number, t.user_attrs, t.system_attrs) for t in trials(tmp_path, study) if t.state == TrialState.RUNNING]
        assert left == [], (round_, left, err[-3000:])
    again = run_cli(args, cwd=tmp_path, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "outage" not in again.stdout + again.stderr and "no heartbeat" not in again.stdout + again.stderr
    recorded = trials(tmp_path, study)
    assert sum(t.state == TrialState.COMPLETE for t in recorded) == 40
    assert not [t for t in recorded if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    for t in recorded:  # every trial that is not complete was interrupted (or a duplicate never launched)
        if t.state != TrialState.COMPLETE:
            assert t.user_attrs.get("error") == "interrupted" or t.user_attrs.get("rejected") == "duplicate", t


@pytest.mark.slow
def test_a_resumed_sweep_never_trains_a_point_again(tmp_path):
    study = f"resume-{tmp_path.name}"
    for n in (3, 6, 9):  # the documented resume: the same command, a larger n_trials
        proc = run_cli(toy_args(tmp_path, study, f"hydra.sweeper.n_trials={n}"), cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
    complete = [t for t in trials(tmp_path, study) if t.state == TrialState.COMPLETE]
    assert len(complete) == 9 and len({t.params["x"] for t in complete}) == 9


@pytest.mark.slow
def test_two_copies_of_a_command_train_distinct_points(tmp_path):
    study = f"copies-{tmp_path.name}"
    procs = [start(toy_args(tmp_path, study, "sleep=0.2", "hydra.sweeper.n_trials=8"), tmp_path) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    recorded = trials(tmp_path, study)
    complete = [t for t in recorded if t.state == TrialState.COMPLETE]
    assert len(complete) == 8 and len({t.params["x"] for t in complete}) == 8
    for t in recorded:  # a repeat the seeds proposed is recorded as such, never trained
        if t.state != TrialState.COMPLETE:
            assert t.user_attrs["rejected"] == "duplicate" and "launched" not in t.user_attrs


@pytest.mark.slow
def test_a_discrete_space_ends_when_every_point_is_trained(tmp_path):
    proc = run_cli(["tests.toy_app.app", "-m", "x=range(0,3)", f"hydra.sweeper.storage=sqlite:///{tmp_path}/s.db",
                    f"hydra.sweep.dir={tmp_path}/sweep", "hydra.sweeper.n_trials=20"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "every one of the search space's 3 points has been tried: the sweep ends" in proc.stdout + proc.stderr
    study = optuna.load_study(study_name="toy", storage=open_storage_readonly(f"sqlite:///{tmp_path}/s.db"))
    assert sorted(t.params["x"] for t in study.get_trials()) == [0, 1, 2]


@pytest.mark.slow
def test_runs_started_together_keep_their_own_folders_and_name_their_seed(tmp_path):
    small = ["trainer.epochs=1", "data.train_subset=300", "data.test_subset=100", "trainer.progress=false"]
    procs = [start(["mnist_arch.train", *small, f"seed={seed}"], tmp_path) for seed in (1, 2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
    runs = sorted((tmp_path / "outputs" / "runs").iterdir())
    assert len(runs) == 2
    metrics = [json.loads((run / "metrics.json").read_text()) for run in runs]
    assert sorted(m["seed"] for m in metrics) == [1, 2]
    for m in metrics:
        assert m["overrides"] == [*small, f"seed={m['seed']}"]
    for run in runs:  # each log holds its own run only
        assert (run / "train.log").read_text().count("training 7,988 parameters") == 1
    again = run_cli(["mnist_arch.train", *small, f"hydra.run.dir={runs[0]}"], cwd=tmp_path)
    assert again.returncode == 1
    assert f"Error: {runs[0]} already holds a finished run (metrics.json); give another hydra.run.dir" in again.stderr
    assert json.loads((runs[0] / "metrics.json").read_text()) == metrics[0]


@pytest.mark.parametrize("sig, inherited, code", [("SIGTERM", signal.SIG_DFL, 143),
                                                  ("SIGINT", signal.SIG_IGN, 130)])
def test_a_signal_to_a_sweep_in_this_process_records_its_trial_interrupted(tmp_path, capsys, sig, inherited, code):
    """The toy job sends the signal to its own process, as ``kill`` would: the sweep's handler records the
    running trial interrupted and exits 128 + the signal. SIGINT is taken even where the process was
    started with it ignored (a script's background job; CI). A handler of the test's own stands behind
    SIGTERM, so a sweep that handled nothing fails this test instead of ending pytest."""
    from tests.toy_app.app import main

    from .support import in_process

    def not_handled(signum, frame):
        raise RuntimeError(f"{sig} reached the test's handler: the sweep did not handle it")

    signum = getattr(signal, sig)
    previous = signal.signal(signum, not_handled if inherited is signal.SIG_DFL else inherited)
    try:
        code_seen = in_process(main, ["app", "-m", "x=range(0,3)", f"hydra.sweeper.storage=sqlite:///{tmp_path}/sweeps.db",
                                      "hydra.sweeper.study_name=term", f"hydra.sweep.dir={tmp_path}/sweep",
                                      f"send_signal={sig}", "hydra.sweeper.n_trials=3"])
    finally:
        signal.signal(signum, previous)
    assert code_seen == code
    assert capsys.readouterr().err.endswith("interrupted: 0 trained trials kept, trial 0 queued to run again first; "
                                            "the same command resumes\n")
    t, queued = trials(tmp_path, "term")
    assert t.state == TrialState.FAIL and t.user_attrs["error"] == "interrupted"
    assert queued.state == TrialState.WAITING and queued.system_attrs["fixed_params"] == t.params
    assert queued.user_attrs["retry_of"] == 0
