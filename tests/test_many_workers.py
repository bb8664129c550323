"""Several worker processes on one study: SQLite, the journal file, and a real PostgreSQL server."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from sweeper.storage import open_storage

from .support import REPO, run_cli

pytestmark = pytest.mark.slow
optuna.logging.set_verbosity(optuna.logging.WARNING)
PASSWORD = "Pw-7d1c9e-never-on-disk"


def storage_url(kind, tmp_path, postgres=None):
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/sweeps.db"
    if kind == "journal":
        return f"journal:///{tmp_path}/sweeps.log"
    return postgres.url(PASSWORD)


def start_workers(n, args, cwd, url, extra_env=None, logs=None):
    """n processes of the same command; their output in ``logs`` (files, readable while they run) or pipes."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "MNIST_SWEEP_STORAGE": url, **(extra_env or {})}
    env.pop("HYDRA_FULL_ERROR", None)
    procs = []
    for k in range(n):
        out = open(logs[k], "w") if logs else subprocess.PIPE
        proc = subprocess.Popen([sys.executable, "-m", *args], cwd=cwd, env=env, stdout=out,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        proc.log = logs[k] if logs else None
        procs.append(proc)
    return procs


def finish(procs, timeout=600):
    """Each worker's output once it has ended. A worker still running after ``timeout`` s fails the test with
    every worker's output (the logs go with pytest's temporary folders, on CI with the clone), all of them
    killed first."""
    outputs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                if q.poll() is None:
                    os.killpg(q.pid, signal.SIGKILL)
            told = [f"--- worker {q.pid} (exit {q.wait()}):\n{q.log.read_text() if q.log else q.communicate()[0]}"
                    for q in procs]
            raise AssertionError(f"worker {p.pid} still running after {timeout} s\n" + "\n".join(told)) from None
        outputs.append(p.log.read_text() if p.log else out)
    return outputs


def test_a_worker_that_outlives_its_wait_fails_the_test_with_every_workers_output(tmp_path):
    log = tmp_path / "w.log"
    with open(log, "w") as out:
        hung = subprocess.Popen([sys.executable, "-c", "print('claimed trial 3', flush=True); import time; time.sleep(600)"],
                                stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    hung.log = log
    done = subprocess.Popen([sys.executable, "-c", "print('finished')"], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    done.log = None
    wait_for(lambda: "claimed" in log.read_text())
    with pytest.raises(AssertionError, match=f"(?s)worker {hung.pid} still running after 1 s.*claimed trial 3.*finished"):
        finish([hung, done], timeout=1)
    assert hung.returncode == -signal.SIGKILL


def trials_of(url, study):
    return optuna.load_study(study_name=study, storage=open_storage(url)).get_trials()


@pytest.fixture(params=["sqlite", "journal", pytest.param("postgres", marks=pytest.mark.postgres)])
def kind_url(request, tmp_path):
    server = request.getfixturevalue("postgres") if request.param == "postgres" else None
    return request.param, storage_url(request.param, tmp_path, server)


def test_three_workers_finish_exactly_n_trials(kind_url, tmp_path):
    kind, url = kind_url
    study = f"three-{kind}-{tmp_path.name}"
    args = ["tests.toy_app.app", "-m", "x=range(0,1000)", "sleep=0.3", "hydra.sweeper.n_trials=12",
            f"hydra.sweeper.study_name={study}"]
    outputs = finish(start_workers(3, args, tmp_path, url))
    trials = trials_of(url, study)
    assert all("Traceback" not in out for out in outputs), outputs
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 12
    assert len({t.number for t in trials}) == len(trials)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    # what the design promises, however the three shared the work: no point trained twice
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len({t.params["x"] for t in complete}) == 12


@pytest.mark.postgres
def test_real_sweep_on_postgres_with_three_workers_keeps_the_password_off_disk(postgres, tmp_path):
    url = postgres.url(PASSWORD)
    study = f"real-{tmp_path.name}"
    args = ["mnist_arch.train", "-m", "model=tiny", "data.train_subset=500", "data.test_subset=500", "trainer.epochs=1",
            "optim=adam", "schedule=none", "hydra/sweeper=optuna_budget", "optim.lr=tag(log,interval(0.001,0.01))",
            "hydra.sweeper.n_trials=4", f"hydra.sweeper.study_name={study}", "hydra.sweeper.heartbeat_interval=1"]
    outputs = finish(start_workers(3, args, tmp_path, url))
    for out in outputs:
        assert "Traceback" not in out, out[-2000:]
        assert PASSWORD not in out
        assert "postgresql://postgres:***@127.0.0.1" in out  # the storage line, masked
    trials = trials_of(url, study)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4 and len({t.params["optim.lr"] for t in complete}) == 4
    # three invocations with one seed propose alike at first: a repeat is recorded, never trained
    assert all(t.user_attrs["rejected"] == "duplicate" and "launched" not in t.user_attrs
               for t in trials if t.state != TrialState.COMPLETE)
    # nothing the sweep wrote holds the password: outputs, Hydra's config snapshots, logs
    written = [p for p in Path(tmp_path).rglob("*") if p.is_file()]
    assert any(p.name == "hydra.yaml" for p in written) and any(p.name == "metrics.json" for p in written)
    assert [p for p in written if PASSWORD.encode() in p.read_bytes()] == []
    # nor the study's attributes
    loaded = optuna.load_study(study_name=study, storage=open_storage(url))
    system = loaded._storage.get_study_system_attrs(loaded._study_id)
    assert PASSWORD not in repr((loaded.user_attrs, system, [(t.user_attrs, t.system_attrs) for t in trials]))
    proc = run_cli(["sweeper.results", study], cwd=tmp_path, env={"MNIST_SWEEP_STORAGE": url})
    assert proc.returncode == 0, proc.stderr
    assert "4 complete" in proc.stdout and PASSWORD not in proc.stdout + proc.stderr


@pytest.mark.parametrize("url", [f"postgresql://u:{PASSWORD}@127.0.0.1:1/db",
                                 f"postgresql://u@127.0.0.1:1/db?password={PASSWORD}",
                                 f"postgresql://u@127.0.0.1:1/db?sslmode=disable&password={PASSWORD}"])
def test_a_password_on_the_command_line_is_refused(tmp_path, url):
    proc = run_cli(["tests.toy_app.app", "-m", "x=range(0,3)", f"hydra.sweeper.storage='{url}'"], cwd=tmp_path)
    assert proc.returncode != 0
    assert "holds a password" in proc.stderr and "SWEEP_STORAGE" in proc.stderr
    assert PASSWORD not in proc.stderr + proc.stdout
    assert not list(tmp_path.rglob("*.yaml"))  # nothing written to disk before the refusal holds it


@pytest.mark.postgres
def test_results_on_an_empty_postgres_database_say_it_holds_no_sweep(postgres, tmp_path):
    import subprocess as sp

    from .pg_server import USER, _binary

    sp.run([_binary("createdb"), "-h", "127.0.0.1", "-p", str(postgres.port), "-U", USER, "empty"], check=True)
    url = postgres.url().rsplit("/", 1)[0] + "/empty"
    proc = run_cli(["sweeper.results", "--storage", url], cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"sweep-results: {url} holds no sweep: it has no Optuna tables (an empty database, " \
                                  "or another program's)"


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


@pytest.mark.postgres
def test_sigkill_of_one_postgres_worker_mid_trial_is_survived(postgres, tmp_path):
    url = postgres.url()
    study = f"kill-{tmp_path.name}"
    args = ["tests.toy_app.app", "-m", "x=range(0,1000)", "hydra.sweeper.n_trials=6",
            f"hydra.sweeper.study_name={study}", "hydra.sweeper.retry_stale_trials=true"]
    # the victim's trials take 300 s: whenever the test sees one running, it is still running at the kill
    (slow,) = start_workers(1, [*args, "sleep=300"], tmp_path, url)
    procs = [slow, *start_workers(2, [*args, "sleep=2"], tmp_path, url)]
    victim = wait_for(lambda: next((t for t in trials_of(url, study) if t.state == TrialState.RUNNING
                                    and t.user_attrs.get("host_pid", "").endswith(f":{slow.pid}")), None))
    os.killpg(slow.pid, signal.SIGKILL)  # each worker leads its own session
    survivors = procs[1:]
    outputs = finish(survivors)
    assert all(p.returncode == 0 for p in survivors), outputs
    trials = trials_of(url, study)
    killed = next(t for t in trials if t.number == victim.number)
    # its worker ran on this host: the survivors see the process gone, without waiting for a grace period
    assert killed.state == TrialState.FAIL and "is gone" in killed.user_attrs["error"]
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 6
    (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == victim.number]
    assert retry.params == victim.params and retry.state == TrialState.COMPLETE
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    finish([slow])


@pytest.mark.postgres
def test_database_outage_is_waited_out(postgres, tmp_path):
    url = postgres.url()
    study = f"outage-{tmp_path.name}"
    args = ["tests.toy_app.app", "-m", "x=range(0,1000)", "sleep=1", "hydra.sweeper.n_trials=8",
            f"hydra.sweeper.study_name={study}", "hydra.sweeper.grace_period=60"]  # longer than the outage
    logs = [tmp_path / f"worker{k}.log" for k in range(2)]
    procs = start_workers(2, args, tmp_path, url, logs=logs)
    wait_for(lambda: sum(t.state == TrialState.COMPLETE for t in trials_of(url, study)) >= 2)
    postgres.stop()
    try:  # the outage lasts until a worker has met it, however slow the machine
        wait_for(lambda: any("database unreachable" in log.read_text() for log in logs))
    finally:
        postgres.start()
    outputs = finish(procs)
    assert all(p.returncode == 0 for p in procs), outputs
    trials = trials_of(url, study)
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 8
    assert not [t for t in trials if t.state == TrialState.RUNNING]


@pytest.mark.postgres
def test_longer_outage_stops_with_a_clear_message_and_rerun_resumes(postgres, tmp_path):
    url = postgres.url()
    study = f"lost-{tmp_path.name}"
    args = ["tests.toy_app.app", "-m", "x=range(0,1000)", "sleep=1", "hydra.sweeper.n_trials=6",
            f"hydra.sweeper.study_name={study}", "hydra.sweeper.storage_patience=3"]
    procs = start_workers(1, args, tmp_path, url)
    wait_for(lambda: sum(t.state == TrialState.COMPLETE for t in trials_of(url, study)) >= 2)
    postgres.stop()
    try:
        (out,) = finish(procs)
    finally:
        postgres.start()
    assert procs[0].returncode != 0
    assert "the database has been unreachable for" in out and "re-run the same command" in out
    assert "Traceback" not in out
    done_before = {t.number for t in trials_of(url, study) if t.state == TrialState.COMPLETE}
    assert len(done_before) >= 2
    (out,) = finish(start_workers(1, [*args[:-1], "hydra.sweeper.storage_patience=120", "hydra.sweeper.grace_period=10",
                                      "hydra.sweeper.heartbeat_interval=1"], tmp_path, url))
    trials = trials_of(url, study)
    assert done_before <= {t.number for t in trials if t.state == TrialState.COMPLETE}  # nothing lost
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 6, out[-2000:]


def test_unreachable_postgres_fails_within_seconds(tmp_path):
    from sweeper.storage import StorageError

    started = time.monotonic()  # in this process: the time the sweeper spends, not an interpreter's start-up
    with pytest.raises(StorageError, match="cannot be opened: .*Connection refused"):
        optuna.load_study(study_name="x", storage=open_storage("postgresql://postgres@127.0.0.1:1/x"))
    # "Connection refused" says it was refused, not timed out; the bound says no retries for minutes (load alone
    # cannot take 120 s for one failed connect)
    assert time.monotonic() - started < 120
    proc = run_cli(["tests.toy_app.app", "-m", "x=range(0,3)", "hydra.sweeper.storage=postgresql://postgres@127.0.0.1:1/x"],
                   cwd=tmp_path)
    assert proc.returncode != 0
    assert "cannot be reached" in proc.stderr and "Traceback" not in proc.stderr


def test_submitit_local_launcher_runs_trials_with_pruning_bridge(tmp_path):
    proc = run_cli(["mnist_arch.train", "-m", "model=tiny", "data.train_subset=500", "data.test_subset=500",
                    "trainer.epochs=2", "optim=adam", "schedule=none", "hydra/sweeper=optuna_budget",
                    "hydra/launcher=submitit_local", "optim.lr=tag(log,interval(0.001,0.01))",
                    "hydra.sweeper.n_trials=2", f"hydra.sweeper.storage=sqlite:///{tmp_path}/sweeps.db",
                    "hydra.sweeper.study_name=submitit"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = optuna.load_study(study_name="submitit", storage=f"sqlite:///{tmp_path}/sweeps.db").get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    for t in trials:  # the reporter reached the trial from the submitit job's own process
        assert sorted(t.intermediate_values) == [1, 2] and t.user_attrs["epochs_run"] == 2
