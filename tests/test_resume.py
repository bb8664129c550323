"""A stopped trial resumes where it stopped: its point runs again first, from its job's last checkpoint.

The toy app (tests/toy_app) checkpoints ``{step, value}`` after every step through ``sweeper.api``
and stops itself after a chosen step as Ctrl-C or ``kill`` would; the MNIST trainer's bit-for-bit
continuation through a real sweep is at the end. Sweeps run in this process.
"""

import io
import json
import os
import re
import signal
import socket
import sys
import types
import urllib.request
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from sweeper import checkpoints
from sweeper.checkpoints import CHECKPOINT_ATTR, AtomicFileSystemArtifactStore, carried_over, location
from sweeper.liveness import HOST_PID_ATTR, fail_stale_trials, what_carries_on
from sweeper.storage import open_storage
from sweeper.trials import LAUNCHED_ATTR

from .support import in_process

STUDY = "resume"


def sweep(tmp_path: Path, *overrides: str, study: str = STUDY) -> int:
    from tests.toy_app.app import main

    return in_process(main, ["app", "-m", f"hydra.sweeper.storage=sqlite:///{tmp_path}/sweeps.db",
                             f"hydra.sweep.dir={tmp_path}/sweep", f"hydra.sweeper.study_name={study}",
                             "hydra/sweeper/pruner=none", "steps=6", "checkpoint=true", *overrides])


def trials(tmp_path: Path, study: str = STUDY):
    return optuna.load_study(study_name=study, storage=open_storage(f"sqlite:///{tmp_path}/sweeps.db")).trials


def said_lines(capsys, text: str):
    """The lines of this sweep's console output that hold ``text``, without the logger's prefix."""
    out = capsys.readouterr()
    return [line.split(" - ", 1)[-1] for line in (out.out + out.err).splitlines() if text in line]


def stored(tmp_path: Path):
    """The checkpoint files in the default store (beside the database), temporary ones included."""
    return sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "sweeps.checkpoints").rglob("*") if p.is_file())


@pytest.mark.parametrize("sig, code", [("SIGINT", 130), ("SIGTERM", 143), ("SIGHUP", 129)])
def test_a_trial_stopped_by_a_signal_runs_again_first_from_its_checkpoint_and_counts_once(tmp_path, capsys, sig, code):
    previous = signal.signal(signal.SIGHUP, signal.SIG_DFL)  # a sweep started under nohup leaves SIGHUP ignored
    try:
        code_seen = sweep(tmp_path, "x=choice(4)", "hydra.sweeper.n_trials=1", "stop_after_step=3", f"stop_signal={sig}")
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert code_seen == code
    err = capsys.readouterr().err
    assert err.endswith("interrupted: 0 trained trials kept, trial 0 queued to run again first with its checkpoint "
                        "of step 3; the same command resumes\n")
    stopped, queued = trials(tmp_path)
    assert stopped.state == TrialState.FAIL and stopped.user_attrs["interrupted"] is True
    assert stopped.user_attrs[CHECKPOINT_ATTR]["step"] == 3 and stopped.user_attrs["steps_ran"] == [1, 2, 3]
    assert queued.state == TrialState.WAITING and queued.user_attrs[CHECKPOINT_ATTR] == stopped.user_attrs[CHECKPOINT_ATTR]
    assert queued.user_attrs["carried_steps"] == [[1, 1.0 / 1.5], [2, 4 / 3], [3, 2.0]]

    assert sweep(tmp_path, "x=choice(4)", "hydra.sweeper.n_trials=1") == 0
    out = capsys.readouterr().out
    assert "trial 1 carries on from trial 0: its job resumes from its checkpoint of step 3" in out
    stopped, resumed = trials(tmp_path)  # nothing else ran: the stopped trial counted once
    assert resumed.state == TrialState.COMPLETE and resumed.value == 4.0
    assert resumed.user_attrs["steps_ran"] == [4, 5, 6]  # no step trained twice
    assert resumed.intermediate_values == {s: 4 * s / 6 for s in range(1, 7)}  # one curve, each step once
    assert stored(tmp_path) == []  # a finished trial's checkpoints are removed
    assert list((tmp_path / "sweeps.checkpoints").iterdir()) == []  # and its study's emptied folder


def test_the_resumed_trial_ends_as_an_uninterrupted_one_and_its_pruner_sees_the_same_history(tmp_path):
    assert sweep(tmp_path, "x=choice(3)", "hydra.sweeper.n_trials=1", study="whole") == 0
    assert sweep(tmp_path, "x=choice(3)", "hydra.sweeper.n_trials=1", "stop_after_step=5") == 130
    assert sweep(tmp_path, "x=choice(3)", "hydra.sweeper.n_trials=1") == 0
    (whole,), (_, resumed) = trials(tmp_path, "whole"), trials(tmp_path)
    assert resumed.values == whole.values and resumed.intermediate_values == whole.intermediate_values
    assert resumed.user_attrs["steps_ran"] == [6]


def test_a_trial_stopped_twice_carries_its_checkpoint_on_and_the_first_stops_folder_goes(tmp_path):
    assert sweep(tmp_path, "x=choice(2)", "hydra.sweeper.n_trials=1", "stop_after_step=2") == 130
    assert stored(tmp_path)[0].startswith("sweeps.checkpoints/resume/trial_0/repeat0_step2_")
    assert sweep(tmp_path, "x=choice(2)", "hydra.sweeper.n_trials=1", "stop_after_step=4") == 130
    assert [p.rsplit("/", 2)[1] for p in stored(tmp_path)] == ["trial_1"]  # the step-2 file replaced, its folder gone
    assert sweep(tmp_path, "x=choice(2)", "hydra.sweeper.n_trials=1") == 0
    t = trials(tmp_path)
    assert [x.state for x in t] == [TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE]
    assert t[1].user_attrs["steps_ran"] == [3, 4] and t[2].user_attrs["steps_ran"] == [5, 6]
    assert t[2].intermediate_values == {s: 2 * s / 6 for s in range(1, 7)}
    assert stored(tmp_path) == []


def test_a_stop_inside_the_second_repeat_keeps_the_first_and_resumes_the_second(tmp_path):
    common = ["x=choice(5)", "hydra.sweeper.n_trials=1", "hydra.sweeper.repeats.n=3", "hydra.sweeper.repeats.aggregate=min"]
    assert sweep(tmp_path, *common, "stop_after_step=4", "stop_on_seed=1") == 130
    stopped, queued = trials(tmp_path)
    assert stopped.user_attrs["repeat_values"] == [5.0] and stopped.user_attrs[CHECKPOINT_ATTR]["repeat"] == 1
    assert queued.user_attrs[CHECKPOINT_ATTR] == stopped.user_attrs[CHECKPOINT_ATTR]
    assert sweep(tmp_path, *common) == 0
    _, resumed = trials(tmp_path)
    assert resumed.state == TrialState.COMPLETE and resumed.user_attrs["repeat_values"] == [5.0, 5.0, 5.0]
    assert resumed.user_attrs["steps_ran"] == [5, 6, 1, 2, 3, 4, 5, 6]  # repeat 1 from step 5, repeat 2 whole
    assert resumed.intermediate_values == {s: 5 * s / 6 for s in range(1, 7)}  # the first repeat's, carried
    assert stored(tmp_path) == []


def test_a_checkpoint_that_cannot_be_read_is_one_line_and_the_job_starts_from_its_first_step(tmp_path, capsys):
    assert sweep(tmp_path, "x=choice(4)", "hydra.sweeper.n_trials=1", "stop_after_step=3") == 130
    (ckpt,) = (tmp_path / "sweeps.checkpoints").rglob("*.ckpt")
    ckpt.unlink()  # lost with a disk, or another store configured since
    capsys.readouterr()
    assert sweep(tmp_path, "x=choice(4)", "hydra.sweeper.n_trials=1") == 0
    said = said_lines(capsys, "cannot be read")
    assert len(said) == 1 and said[0].startswith("trial 1: its checkpoint of step 3 cannot be read (ArtifactNotFound")
    assert said[0].endswith("; starting from the first step")
    _, resumed = trials(tmp_path)
    assert resumed.state == TrialState.COMPLETE and resumed.user_attrs["steps_ran"] == [1, 2, 3, 4, 5, 6]
    assert resumed.intermediate_values == {s: 4 * s / 6 for s in range(1, 7)}  # steps 1-3 carried, not reported twice


def test_keep_best_keeps_only_the_best_trials_last_checkpoint_and_lists_it(tmp_path):
    assert sweep(tmp_path, "x=choice(1,3,2)", "hydra.sweeper.n_trials=3", "hydra/sweeper/sampler=grid",
                 "hydra.sweeper.checkpoint.keep_best=true") == 0
    best = max(trials(tmp_path), key=lambda t: t.value)
    assert best.params == {"x": 3}
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{tmp_path}/sweeps.db")
    kept = study._storage.get_study_system_attrs(study._study_id)[checkpoints.KEPT_ATTR]
    assert kept == {str(best.number): best.user_attrs[CHECKPOINT_ATTR]}
    assert stored(tmp_path) == [f"sweeps.checkpoints/{kept[str(best.number)]['id']}"]
    path = tmp_path / "sweeps.checkpoints" / kept[str(best.number)]["id"]
    assert json.loads(path.read_text()) == {"step": 6, "value": 3.0}


@pytest.mark.parametrize("keep_best", [False, True])
def test_an_outage_that_ends_before_the_trial_does_leaves_no_checkpoint_or_note(tmp_path, keep_best):
    """Steps 4-5 saved while the database was away (a note names the latest), step 6 recorded again or,
    the outage lasting to the job's end, still noted: a finished trial leaves only what keep_best keeps."""
    for restored_after in (5, 6):
        study = f"back{restored_after}"
        assert sweep(tmp_path, "x=choice(3)", "hydra.sweeper.n_trials=1", "break_database_after_step=3",
                     f"restore_database_after_step={restored_after}", f"hydra.sweeper.checkpoint.keep_best={keep_best}",
                     study=study) == 0
        (done,) = trials(tmp_path, study)
        assert done.state == TrialState.COMPLETE and done.intermediate_values == {s: 3 * s / 6 for s in range(1, 7)}
        left = [p for p in stored(tmp_path) if f"/{study}/" in p]
        if keep_best:  # its last checkpoint alone, the one saved while the database was away included
            study_ = optuna.load_study(study_name=study, storage=f"sqlite:///{tmp_path}/sweeps.db")
            kept = study_._storage.get_study_system_attrs(study_._study_id)[checkpoints.KEPT_ATTR][str(done.number)]
            assert kept["step"] == 6 and left == [f"sweeps.checkpoints/{kept['id']}"]
            assert json.loads((tmp_path / "sweeps.checkpoints" / kept["id"]).read_text())["step"] == 6
            assert done.user_attrs[CHECKPOINT_ATTR]["step"] == (6 if restored_after == 5 else 3)
        else:
            assert left == []


@pytest.fixture
def s3_bucket(monkeypatch):
    """A bucket on a local S3 server (moto's, spoken to over HTTP by boto3 as a real one would be); the
    sweep finds it through the standard AWS environment variables. moto keeps its buckets in the process,
    not in the server, so each test starts from an empty S3 and leaves one (tests in one process)."""
    boto3 = pytest.importorskip("boto3")
    server = pytest.importorskip("moto.server").ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    reset = lambda: urllib.request.urlopen(urllib.request.Request(f"http://{host}:{port}/moto-api/reset",
                                                                  method="POST"), timeout=30).close()
    reset()
    for key, value in {"AWS_ENDPOINT_URL_S3": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "sweep",
                       "AWS_SECRET_ACCESS_KEY": "sweep", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3")
    client.create_bucket(Bucket="runs")
    yield client
    reset()
    server.stop()


def test_an_s3_store_resumes_a_stopped_trial_and_leaves_nothing_in_the_bucket(tmp_path, s3_bucket):
    keys = lambda: sorted(o["Key"] for o in s3_bucket.list_objects_v2(Bucket="runs").get("Contents", []))
    store = ["hydra.sweeper.checkpoint.store=s3://runs/team/a", "x=choice(4)", "hydra.sweeper.n_trials=1"]
    assert sweep(tmp_path, *store, "stop_after_step=3") == 130
    stopped, queued = trials(tmp_path)
    rec = stopped.user_attrs[CHECKPOINT_ATTR]
    assert rec["step"] == 3 and rec["id"].startswith("team/a/resume/trial_0/") and keys() == [rec["id"]]
    assert queued.user_attrs[CHECKPOINT_ATTR] == rec
    assert sweep(tmp_path, *store) == 0
    _, resumed = trials(tmp_path)
    assert resumed.state == TrialState.COMPLETE and resumed.user_attrs["steps_ran"] == [4, 5, 6]
    assert resumed.intermediate_values == {s: 4 * s / 6 for s in range(1, 7)}
    assert keys() == [] and not (tmp_path / "sweeps.checkpoints").exists()  # nothing beside the database either
    # an outage to the job's end: the note in the bucket gives back steps 4-6, then goes with the trial's folder
    assert sweep(tmp_path, "hydra.sweeper.checkpoint.store=s3://runs/team/a", "x=choice(3)", "hydra.sweeper.n_trials=1",
                 "break_database_after_step=3", "restore_database_after_step=6", study="outage") == 0
    (done,) = trials(tmp_path, "outage")
    assert done.state == TrialState.COMPLETE and done.intermediate_values == {s: s / 2 for s in range(1, 7)}
    assert keys() == []


@pytest.mark.slow
def test_an_s3_store_stopped_by_an_outage_resumes_from_the_checkpoint_saved_in_it(tmp_path, s3_bucket):
    """The stop mark and the note of what was saved while the database was away live in the bucket too."""
    from .support import run_cli

    args = ["tests.toy_app.app", "-m", "x=choice(3)", f"hydra.sweeper.storage=sqlite:///{tmp_path}/sweeps.db",
            "hydra.sweeper.study_name=outage", f"hydra.sweep.dir={tmp_path}/sweep", "hydra/sweeper/pruner=none",
            "steps=6", "checkpoint=true", "hydra.sweeper.n_trials=1", "hydra.sweeper.storage_patience=2",
            "hydra.sweeper.checkpoint.store=s3://runs"]
    stopped = run_cli([*args, "break_database_after_step=3"], cwd=tmp_path)
    assert stopped.returncode == 1, stopped.stderr[-2000:]
    names = sorted(o["Key"].rsplit("/", 1)[1] for o in s3_bucket.list_objects_v2(Bucket="runs")["Contents"])
    assert names[-2:] == [checkpoints.STOPPED_MARK, checkpoints.UNRECORDED_NOTE] and len(names) == 4  # steps 3, 6
    (tmp_path / "sweeps.db").rmdir()
    (tmp_path / "sweeps.db.away").rename(tmp_path / "sweeps.db")
    again = run_cli(args, cwd=tmp_path)
    assert again.returncode == 0 and "its checkpoint of step 6" in again.stdout + again.stderr, again.stderr[-2000:]
    _, resumed = trials(tmp_path, "outage")
    assert resumed.state == TrialState.COMPLETE and resumed.intermediate_values == {s: s / 2 for s in range(1, 7)}
    assert "Contents" not in s3_bucket.list_objects_v2(Bucket="runs")


def test_an_s3_bucket_that_cannot_be_written_is_one_line_before_any_trial(tmp_path, capsys, s3_bucket):
    assert sweep(tmp_path, "x=choice(4)", "hydra.sweeper.checkpoint.store=s3://no-such-bucket/x") == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: hydra.sweeper.checkpoint.store: s3://no-such-bucket/x cannot be written "
                          "(NoSuchBucket: ") and err.count("\n") == 1, err
    assert not (tmp_path / "sweeps.db").exists() or trials(tmp_path) == []


def test_a_job_that_never_checkpoints_leaves_nothing_and_is_queued_with_its_point_alone(tmp_path, capsys):
    assert sweep(tmp_path, "x=choice(4)", "hydra.sweeper.n_trials=1", "checkpoint=false", "stop_after_step=3") == 130
    assert capsys.readouterr().err.endswith("trial 0 queued to run again first; the same command resumes\n")
    assert not (tmp_path / "sweeps.checkpoints").exists() or stored(tmp_path) == []
    assert sweep(tmp_path, "x=choice(4)", "hydra.sweeper.n_trials=1", "checkpoint=false") == 0
    _, again = trials(tmp_path)
    assert again.params == {"x": 4} and again.user_attrs["steps_ran"] == [1, 2, 3, 4, 5, 6]
    assert again.intermediate_values == {s: 4 * s / 6 for s in range(1, 7)}


def test_an_unwritable_checkpoint_store_is_one_line_before_any_trial(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert sweep(tmp_path, "x=choice(4)", f"hydra.sweeper.checkpoint.store={blocker}/ckpt") == 1
    assert capsys.readouterr().err == (f"Error: hydra.sweeper.checkpoint.store: {blocker}/ckpt cannot be written "
                                       "(Not a directory)\n")
    assert not (tmp_path / "sweeps.db").exists() or trials(tmp_path) == []


# ------------------------------------------------------------------ the pieces


def test_checkpoints_go_beside_a_file_database_else_where_the_sweep_started(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert location(None, "sqlite:///outputs/sweeps.db") == str(tmp_path / "outputs" / "sweeps.checkpoints")
    assert location(None, f"journal:///{tmp_path}/j/sweeps.log") == str(tmp_path / "j" / "sweeps.checkpoints")
    assert location(None, "postgresql://u@h/db") == str(tmp_path / "outputs" / "checkpoints")
    assert location(None, None) == str(tmp_path / "outputs" / "checkpoints")
    assert location("rel/ckpt", "postgresql://u@h/db") == str(tmp_path / "rel" / "ckpt")
    assert location("s3://bucket/runs", None) == "s3://bucket/runs"
    assert checkpoints.new_id("s3://bucket/runs/", "my study", 7, 1, 3).startswith("runs/my_study/trial_7/repeat1_step3_")
    assert checkpoints.new_id("/x", "s", 7, 0, 3).startswith("s/trial_7/repeat0_step3_")
    assert checkpoints.new_id("s3://bucket/a/b/c", "s", 7, 0, 3).startswith("a/b/c/s/trial_7/")  # a nested prefix whole
    assert checkpoints.new_id("s3://bucket", "s", 7, 0, 3).startswith("s/trial_7/")
    assert checkpoints.new_id("s3://bucket//", "s", 7, 0, 3).startswith("s/trial_7/")  # no prefix, not "/"
    assert checkpoints.new_id("s3://bucket/X/runsX", "s", 7, 0, 3).startswith("X/runsX/s/trial_7/")  # only "/" trimmed
    assert checkpoints.new_id("s3://bucket/X", "s", 7, 0, 3).startswith("X/s/trial_7/")
    assert checkpoints.trial_folder("/x", "MyStudy v2", 3) == "MyStudy_v2/trial_3"  # case kept, the rest made safe
    assert checkpoints.trial_folder("/x", "", 3) == "study/trial_3"


def test_a_write_cut_short_leaves_the_previous_file_whole_and_no_temporary_file(tmp_path):
    store = AtomicFileSystemArtifactStore(str(tmp_path))
    store.write("s/trial_0/a.ckpt", io.BytesIO(b"whole"))

    class Cut(io.BytesIO):
        def read(self, *args):
            raise KeyboardInterrupt  # a kill in the middle of the copy

    with pytest.raises(KeyboardInterrupt):
        store.write("s/trial_0/a.ckpt", Cut(b"new"))
    assert (tmp_path / "s/trial_0/a.ckpt").read_bytes() == b"whole"
    assert sorted(p.name for p in (tmp_path / "s/trial_0").iterdir()) == ["a.ckpt"]
    with store.open_reader("s/trial_0/a.ckpt") as f:
        assert f.read() == b"whole"
    with pytest.raises(ValueError):
        store.write("../outside", io.BytesIO(b"x"))  # Optuna's check: ids stay inside the store


def frozen(number=0, attrs=None, steps=None) -> optuna.trial.FrozenTrial:
    return optuna.trial.FrozenTrial(number=number, state=TrialState.FAIL, value=None, datetime_start=None,
                                    datetime_complete=None, params={}, distributions={}, user_attrs=attrs or {},
                                    system_attrs={}, intermediate_values=steps or {}, trial_id=number)


def test_what_a_queued_trial_carries():
    ckpt = {"id": "s/trial_4/repeat0_step2_x.ckpt", "step": 2, "repeat": 0}
    steps = {1: 0.1, 2: 0.2, 3: 0.3}
    assert carried_over(frozen(4, {CHECKPOINT_ATTR: ckpt}, steps)) == {
        CHECKPOINT_ATTR: ckpt, "continues": 4, "carried_steps": [[1, 0.1], [2, 0.2]]}  # step 3 is reported again
    assert carried_over(frozen(4, {}, steps)) == {}  # its point alone: it starts again
    assert carried_over(frozen(4, {CHECKPOINT_ATTR: {"id": 3, "step": 2}}, steps)) == {}  # not a record
    repeated = {"repeat_values": [1.0], "repeats_n": 3, "repeat_seconds": [2.0], "repeat_attrs": [{}]}
    second = {**ckpt, "repeat": 1}
    assert carried_over(frozen(4, {**repeated, CHECKPOINT_ATTR: second}, steps)) == {
        **{k: v for k, v in repeated.items() if k != "repeats_n"}, CHECKPOINT_ATTR: second, "continues": 4,
        "carried_steps": [[1, 0.1], [2, 0.2], [3, 0.3]]}  # the first repeat ran all its steps
    # the first repeat's checkpoint, left when the second began and saved none yet: not the second's
    assert CHECKPOINT_ATTR not in carried_over(frozen(4, {**repeated, CHECKPOINT_ATTR: ckpt}, steps))
    done = {**repeated, "repeat_values": [1.0, 2.0, 3.0]}
    assert carried_over(frozen(4, {**done, CHECKPOINT_ATTR: ckpt}, steps)) == {}  # every repeat finished


@pytest.mark.parametrize("carried, words", [
    ({}, ""),
    ({"repeat_values": None, CHECKPOINT_ATTR: None}, ""),
    ({"repeat_values": [1.0]}, "its 1 finished repeat"),
    ({"repeat_values": [1.0, 2.0]}, "its 2 finished repeats"),
    ({CHECKPOINT_ATTR: {"id": "a", "step": 3}}, "its checkpoint of step 3"),
    ({"repeat_values": [1.0, 2.0], CHECKPOINT_ATTR: {"id": "a", "step": 3}},
     "its 2 finished repeats and its checkpoint of step 3"),
])
def test_what_a_queued_trial_carries_in_words(carried, words):
    assert what_carries_on(carried) == words


def test_what_a_queued_trial_carries_when_its_attributes_are_partial():
    ckpt = {"id": "s/trial_4/step2_x.ckpt", "step": 2}  # a record without its repeat: the job's only one
    steps = {1: 0.1, 2: 0.2, 3: 0.3}
    assert carried_over(frozen(4, {CHECKPOINT_ATTR: ckpt}, steps))[CHECKPOINT_ATTR] == ckpt
    # a value without a repeat count is the job's own, not a first repeat of several: nothing to carry
    assert carried_over(frozen(4, {"repeat_values": [1.0], "repeat_seconds": [2.0]}, steps)) == {}


def test_the_checkpoint_store_is_made_and_probed_at_the_start(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    nested = tmp_path / "a" / "b"
    checkpoints.check_store(str(nested))
    checkpoints.check_store(str(nested))  # one that exists already is fine too
    assert nested.is_dir() and list(nested.iterdir()) == []  # the write probe is gone
    with pytest.raises(checkpoints.CheckpointStoreError, match=r"^hydra.sweeper.checkpoint.store='s3://' names no bucket"):
        checkpoints.check_store("s3://")
    assert list(tmp_path.iterdir()) == [tmp_path / "a"]  # an s3 URL is never a local folder
    checkpoints.check_store({"_target_": "optuna.artifacts.FileSystemArtifactStore", "base_path": str(tmp_path)})
    # as the sweep's header names it
    assert checkpoints.shown(str(nested)) == str(nested)
    assert checkpoints.shown({"_target_": "my.Store"}) == "my.Store (hydra.sweeper.checkpoint.store)"
    assert checkpoints.shown({"base_path": "x"}) == "an artifact store (hydra.sweeper.checkpoint.store)"
    with pytest.raises(checkpoints.CheckpointStoreError, match=r"^hydra.sweeper.checkpoint.store cannot be made: "):
        checkpoints.check_store({"_target_": "nowhere.Store"})
    monkeypatch.setitem(sys.modules, "optuna.artifacts", types.ModuleType("optuna.artifacts"))  # as without boto3
    with pytest.raises(checkpoints.CheckpointStoreError, match=r"^hydra.sweeper.checkpoint.store='s3://b/p' needs boto3 "
                                                              r"\(cannot import name 'Boto3ArtifactStore'.*\): pip install boto3$"):
        checkpoints.open_store("s3://b/p")


def test_a_configured_store_has_its_files_removed_and_an_unusable_note_is_none(tmp_path, caplog):
    where = {"_target_": "optuna.artifacts.FileSystemArtifactStore", "base_path": str(tmp_path)}
    (tmp_path / "a.ckpt").write_bytes(b"x")
    with caplog.at_level("WARNING", logger="sweeper.checkpoints"):
        checkpoints.remove(where, {"id": "a.ckpt", "step": 1}, ["s/trial_1"])  # its folders: not the store's to know
    assert caplog.messages == [] and not (tmp_path / "a.ckpt").exists()
    store = AtomicFileSystemArtifactStore(str(tmp_path))
    for note in ({"id": "s/trial_1/a.ckpt", "step": 2, "repeat": 0},  # no reports
                 {"id": "s/trial_1/a.ckpt", "step": "2", "repeat": 0, "reports": []}):  # not a record
        store.write(f"s/trial_1/{checkpoints.UNRECORDED_NOTE}", io.BytesIO(json.dumps(note).encode()))
        assert checkpoints.unrecorded(str(tmp_path), "s", 1) is None


def test_a_study_folder_goes_with_its_last_trial_folder_and_the_store_folder_stays(tmp_path):
    store = AtomicFileSystemArtifactStore(str(tmp_path / "store"))
    for folder in ("s/trial_1", "s/trial_2"):
        store.write(f"{folder}/a.ckpt", io.BytesIO(b"x"))
    store.remove_folder("s/trial_1")
    assert sorted(p.name for p in (tmp_path / "store" / "s").iterdir()) == ["trial_2"]  # another trial's: kept
    store.remove_folder("s/trial_2")
    assert (tmp_path / "store").is_dir() and list((tmp_path / "store").iterdir()) == []
    store.write("s/trial_3/a.ckpt", io.BytesIO(b"y"))  # a later trial makes the study folder again
    assert (tmp_path / "store" / "s" / "trial_3" / "a.ckpt").read_bytes() == b"y"


@pytest.mark.parametrize("made_again", [False, True])
def test_a_checkpoint_written_as_another_job_removes_the_emptied_study_folder_is_still_written(tmp_path, monkeypatch,
                                                                                                made_again):
    store = AtomicFileSystemArtifactStore(str(tmp_path))
    real_open, gone = open, []

    def open_after_removal(path, *args, **kwargs):  # the other job's rmdir lands between mkdir and open
        if not gone and str(path).endswith(f".part-{os.getpid()}"):
            gone.append(path)
            Path(path).parent.rmdir()
            Path(path).parent.parent.rmdir()
            if made_again:  # and a third job's write makes the folder before this one's retry
                with pytest.raises(FileNotFoundError):
                    real_open(path, *args, **kwargs)
                Path(path).parent.mkdir(parents=True)
                raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", open_after_removal)
    store.write("s/trial_1/a.ckpt", io.BytesIO(b"x"))
    monkeypatch.undo()
    assert gone and (tmp_path / "s" / "trial_1" / "a.ckpt").read_bytes() == b"x"


def test_removing_what_is_gone_is_quiet_and_a_store_that_cannot_be_opened_is_one_warning(tmp_path, caplog):
    where = str(tmp_path)
    AtomicFileSystemArtifactStore(where).write("s/trial_1/a.ckpt", io.BytesIO(b"x"))
    with caplog.at_level("WARNING", logger="sweeper.checkpoints"):
        checkpoints.remove(where, {"id": "s/trial_1/gone.ckpt", "step": 1}, ["s/trial_1", "s/trial_9"])
        assert not (tmp_path / "s" / "trial_1").exists() and caplog.records == []
        checkpoints.remove({"_target_": "nowhere.Store"}, {"id": "s/trial_2/a.ckpt", "step": 1})
        checkpoints.mark_stopped({"_target_": "nowhere.Store"}, "s", 3)
    why = "hydra.sweeper.checkpoint.store cannot be made: Error locating target 'nowhere.Store'"
    assert [r.getMessage().split(", set env var")[0] for r in caplog.records] == [
        f"could not remove a checkpoint (s/trial_2/a.ckpt): {why}", f"could not note trial 3 as stopped by the sweep ({why}"]
    assert caplog.records[1].getMessage().endswith("); retry_stale_trials=true runs it again")
    checkpoints.mark_stopped(where, "s", 3)
    assert checkpoints.stopped_by_sweep(where, "s", 3) and not checkpoints.stopped_by_sweep(where, "s", 4)


def lost_trial(tmp_path: Path, retry: bool):
    """A RUNNING trial whose worker on this host is gone, with a checkpoint in the store, failed as lost."""
    study, where, rec = a_lost_workers_trial(tmp_path)
    assert fail_stale_trials(study, grace_period=3600, retry=retry, checkpoints=where) == [0]
    return study, where, rec


def as_lost_workers(trial: optuna.Trial, **attrs) -> None:
    """Mark a RUNNING trial launched by a worker process on this host that is gone (a pid above Linux's limit)."""
    for key, value in {LAUNCHED_ATTR: True, HOST_PID_ATTR: f"{socket.gethostname()}:{2 ** 22 + 1}", **attrs}.items():
        trial.set_user_attr(key, value)


def a_lost_workers_trial(tmp_path: Path):
    """A RUNNING trial whose worker on this host is gone, with a checkpoint in the store."""
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db", study_name="lost")
    where = location(None, f"sqlite:///{tmp_path}/s.db")
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    rec = {"id": checkpoints.new_id(where, "lost", trial.number, 0, 2), "step": 2, "repeat": 0}
    AtomicFileSystemArtifactStore(where).write(rec["id"], io.BytesIO(b"state"))
    trial.report(0.5, 1)
    trial.report(0.6, 2)
    trial.report(0.7, 3)
    as_lost_workers(trial, **{CHECKPOINT_ATTR: rec})
    return study, where, rec


@pytest.mark.parametrize("retry", [True, False])
def test_a_claim_fails_a_lost_workers_trial_then_runs_its_point_again_or_removes_its_checkpoint(tmp_path, retry):
    from omegaconf import OmegaConf

    from sweeper.budget import BudgetGate
    from sweeper.claim import ClaimStep

    study, where, rec = a_lost_workers_trial(tmp_path)
    gate = BudgetGate(lambda overrides: OmegaConf.create({}), None, "n")
    step = ClaimStep(f"sqlite:///{tmp_path}/s.db", gate, n_trials=5, max_failure_rate=0.0, grace_period=3600,
                     retry_stale_trials=retry, grid_size=None, space_size=None, custom_search_space=None, config=None,
                     checkpoints=where)
    claim = step(study, {"x": optuna.distributions.FloatDistribution(0, 1)}, {}, "0")
    lost = study.trials[0]
    assert lost.state == TrialState.FAIL and lost.user_attrs["lost_worker"] is True and claim.action == "run"
    if retry:  # its point runs again at once, from its checkpoint
        assert claim.trial.params == lost.params and claim.trial.user_attrs["retry_of"] == 0
        assert claim.trial.user_attrs[CHECKPOINT_ATTR] == rec and (Path(where) / rec["id"]).read_bytes() == b"state"
    else:  # not run again: its checkpoint would only take disk
        assert claim.trial.params != lost.params and "retry_of" not in claim.trial.user_attrs
        assert not (Path(where) / rec["id"]).exists()


def test_a_lost_workers_trial_queued_again_carries_its_checkpoint(tmp_path):
    study, where, rec = lost_trial(tmp_path, retry=True)
    lost, queued = study.trials
    assert lost.state == TrialState.FAIL and lost.user_attrs["lost_worker"] is True
    assert queued.state == TrialState.WAITING and queued.user_attrs[CHECKPOINT_ATTR] == rec
    assert queued.user_attrs["carried_steps"] == [[1, 0.5], [2, 0.6]] and queued.user_attrs["retry_of"] == 0
    assert (Path(where) / rec["id"]).read_bytes() == b"state"


@pytest.mark.parametrize("in_s3", [False, True])
def test_a_trial_its_sweep_stopped_in_an_outage_is_queued_again_without_retry_stale_trials(tmp_path, request, in_s3,
                                                                                          caplog):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db", study_name="lost")
    where = location(None, f"sqlite:///{tmp_path}/s.db")
    if in_s3:  # the notes live under the store's prefix in the bucket
        bucket, where = request.getfixturevalue("s3_bucket"), "s3://runs/team"
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    as_lost_workers(trial)
    trial.report(0.1, 1)
    trial.report(0.2, 2)
    trial.set_user_attr(CHECKPOINT_ATTR, {"id": checkpoints.new_id(where, "lost", trial.number, 0, 2), "step": 2,
                                          "repeat": 0})
    # what its job saved after the database went away: a later checkpoint, and the reports not taken
    later = {"id": checkpoints.new_id(where, "lost", trial.number, 0, 4), "step": 4, "repeat": 0}
    assert checkpoints.note_unrecorded(where, "lost", trial.number, {**later, "reports": [[3, 0.3], [4, 0.4]]})
    checkpoints.mark_stopped(where, "lost", trial.number)  # what the stopping sweep leaves, the database away
    assert checkpoints.stopped_by_sweep(where, "lost", trial.number)
    assert not checkpoints.stopped_by_sweep(where, "lost", trial.number + 1)
    with caplog.at_level("INFO", logger="sweeper.liveness"):
        assert fail_stale_trials(study, grace_period=3600, retry=False, checkpoints=where) == [trial.number]
    assert [r.getMessage() for r in caplog.records if r.name == "sweeper.liveness"] == [
        "trial 0: stopped by its sweep while the database was away; marked failed",
        "trial 0 re-queued with the same parameters and its checkpoint of step 4"]
    stopped, queued = study.trials
    assert stopped.user_attrs["error"] == "stopped by its sweep while the database was away"
    assert stopped.user_attrs["interrupted"] is True and "lost_worker" not in stopped.user_attrs
    assert queued.state == TrialState.WAITING and queued.user_attrs["retry_of"] == 0
    assert queued.user_attrs[CHECKPOINT_ATTR] == later  # not the step 2 one the database last took
    assert queued.user_attrs["carried_steps"] == [[1, 0.1], [2, 0.2], [3, 0.3], [4, 0.4]]
    if in_s3:
        notes = sorted(o["Key"] for o in bucket.list_objects_v2(Bucket="runs")["Contents"])
        assert notes == [f"team/lost/trial_{trial.number}/{checkpoints.STOPPED_MARK}",
                         f"team/lost/trial_{trial.number}/{checkpoints.UNRECORDED_NOTE}"]


def test_an_s3_trial_folder_goes_alone_and_its_note_is_cleared_under_the_prefix(s3_bucket, caplog, monkeypatch):
    """A finished trial's folder in a bucket: its objects go, and nothing else (trial_10 is not under trial_1/,
    another study's and another prefix's objects stay); a folder already empty is quiet."""
    from optuna.artifacts import Boto3ArtifactStore

    keys = lambda: sorted(o["Key"] for o in s3_bucket.list_objects_v2(Bucket="runs").get("Contents", []))
    where = "s3://runs/team"
    kept = ["team/other/trial_1/a.ckpt", "team/s/trial_10/a.ckpt", "elsewhere/s/trial_1/a.ckpt"]
    for key in kept + ["team/s/trial_1/a.ckpt", "team/s/trial_1/b.ckpt"]:
        s3_bucket.put_object(Bucket="runs", Key=key, Body=b"x")
    with caplog.at_level("WARNING", logger="sweeper.checkpoints"):
        checkpoints.remove(where, None, [checkpoints.trial_folder(where, "s", 1)])
        assert keys() == sorted(kept)
        checkpoints.remove(where, None, [checkpoints.trial_folder(where, "s", 1), checkpoints.trial_folder(where, "s", 2)])
    assert [r for r in caplog.records if r.name.startswith("sweeper")] == [] and keys() == sorted(kept)
    assert checkpoints.note_unrecorded(where, "s", 4, {"id": "team/s/trial_4/a.ckpt", "step": 2, "repeat": 0, "reports": []})
    assert checkpoints.unrecorded(where, "s", 4)["step"] == 2 and f"team/s/trial_4/{checkpoints.UNRECORDED_NOTE}" in keys()
    checkpoints.clear_unrecorded(where, "s", 4)
    assert checkpoints.unrecorded(where, "s", 4) is None and keys() == sorted(kept)
    written = []  # the start's probe goes under the prefix too: credentials may be limited to it
    real_write = Boto3ArtifactStore.write
    monkeypatch.setattr(Boto3ArtifactStore, "write", lambda self, key, body: written.append(key) or real_write(self, key, body))
    checkpoints.check_store(where)
    assert len(written) == 1 and written[0].startswith("team/.probe-") and keys() == sorted(kept)


def test_a_write_meets_a_leftover_temporary_file_of_its_own_pid(tmp_path):
    """A job killed mid-write leaves .NAME.part-PID; in containers the next job often has the same pid."""
    store = AtomicFileSystemArtifactStore(str(tmp_path))
    store.write("s/trial_1/a.ckpt", io.BytesIO(b"old"))
    (tmp_path / "s" / "trial_1" / f".a.ckpt.part-{os.getpid()}").write_bytes(b"half a checkpoint of a killed job")
    store.write("s/trial_1/a.ckpt", io.BytesIO(b"new"))
    assert sorted(p.name for p in (tmp_path / "s" / "trial_1").iterdir()) == ["a.ckpt"]
    assert (tmp_path / "s" / "trial_1" / "a.ckpt").read_bytes() == b"new"


def test_a_note_that_cannot_be_written_is_one_warning_and_false(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with caplog.at_level("WARNING", logger="sweeper.checkpoints"):
        assert checkpoints.note_unrecorded(str(blocker), "s", 3, {"id": "s/trial_3/a.ckpt", "step": 4, "repeat": 0,
                                                                  "reports": []}) is False
    assert len(caplog.messages) == 1 and caplog.messages[0].startswith("trial 3: could not note its checkpoint of step 4 (")
    assert caplog.messages[0].endswith("Not a directory: " + repr(str(blocker / "s" / "trial_3")) + ")")  # and why
    assert checkpoints.unrecorded(str(blocker), "s", 3) is None


def test_a_noted_checkpoint_is_carried_only_where_it_is_later_and_of_the_repeat_that_runs_next():
    from types import SimpleNamespace

    def stopped(attrs, steps):
        return SimpleNamespace(user_attrs=attrs, intermediate_values=steps, number=5)

    rec = {"id": "s/trial_5/a.ckpt", "step": 3, "repeat": 0}
    noted = lambda step, repeat=0: {"id": "s/trial_5/b.ckpt", "step": step, "repeat": repeat, "reports": [[step, 0.9]]}
    base = {CHECKPOINT_ATTR: rec}
    assert checkpoints.carried_over(stopped(base, {1: 0.1}), noted(4))[CHECKPOINT_ATTR]["id"] == "s/trial_5/b.ckpt"
    assert checkpoints.carried_over(stopped(base, {1: 0.1}), noted(4))["carried_steps"] == [[1, 0.1], [4, 0.9]]
    for older in (noted(3), noted(2), noted(4, repeat=1)):  # not later, or another repeat's: the record stands
        carried = checkpoints.carried_over(stopped(base, {1: 0.1, 3: 0.3}), older)
        assert carried[CHECKPOINT_ATTR] == rec and carried["carried_steps"] == [[1, 0.1], [3, 0.3]]
    alone = checkpoints.carried_over(stopped({}, {}), noted(2))  # no record the database took: the note alone
    assert alone[CHECKPOINT_ATTR] == {"id": "s/trial_5/b.ckpt", "step": 2, "repeat": 0}
    assert alone["continues"] == 5 and alone["carried_steps"] == [[2, 0.9]]
    second = {CHECKPOINT_ATTR: rec, "repeat_values": [0.5], "repeats_n": 3}  # the second repeat runs next
    assert checkpoints.carried_over(stopped(second, {}), noted(4, repeat=1))[CHECKPOINT_ATTR]["repeat"] == 1
    unnamed = {key: value for key, value in noted(4).items() if key != "repeat"}  # a note without its repeat:
    assert checkpoints.carried_over(stopped(base, {}), unnamed)[CHECKPOINT_ATTR] == {"id": "s/trial_5/b.ckpt", "step": 4,
                                                                                   "repeat": 0}  # the first repeat's
    assert CHECKPOINT_ATTR not in checkpoints.carried_over(stopped(second, {}), unnamed)  # not the second repeat's


def test_an_interrupted_trial_is_queued_again_where_it_was_launched_queued_before_or_carries_something(tmp_path):
    from sweeper.interrupts import INTERRUPTED_ATTR
    from sweeper.liveness import record_interrupted

    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db", study_name="int")
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    launched, asked, saved, retried = (study.ask(dist) for _ in range(4))
    launched.set_user_attr("launched", True)
    rec = {"id": f"int/trial_{saved.number}/a.ckpt", "step": 2, "repeat": 0}
    saved.set_user_attr(CHECKPOINT_ATTR, rec)  # never marked launched, yet it saved a checkpoint
    retried.set_user_attr("retry_of", launched.number)  # a point queued again before, not launched yet
    for t in (launched, asked, saved, retried):
        assert record_interrupted(study, study.trials[t.number]) is True
    assert record_interrupted(study, study.trials[launched.number]) is False  # recorded once
    assert all(t.state == TrialState.FAIL and t.user_attrs[INTERRUPTED_ATTR] for t in study.trials[:4])
    queued = study.get_trials(states=(TrialState.WAITING,))  # the one only asked (nothing to carry) is not
    assert [(q.user_attrs["retry_of"], q.system_attrs["fixed_params"]) for q in queued] == [
        (t.number, t.params) for t in (launched, saved, retried)]
    assert queued[1].user_attrs[CHECKPOINT_ATTR] == rec and CHECKPOINT_ATTR not in queued[0].user_attrs


def test_keep_best_after_a_stop_and_an_outage_to_the_jobs_end_leaves_the_kept_checkpoint_alone_and_quiet(tmp_path, capsys):
    """Stopped at step 2, resumed with the database away to the job's end: no save of the resumed trial was
    recorded, so none removed the stopped trial's folder. The finished trial keeps its last (noted) checkpoint
    alone, the stopped trial's folder and the note gone, and says nothing."""
    common = ["x=choice(3)", "hydra.sweeper.n_trials=1", "hydra.sweeper.checkpoint.keep_best=true"]
    assert sweep(tmp_path, *common, "stop_after_step=2") == 130
    assert len(stored(tmp_path)) == 1  # the stopped trial's step 2
    capsys.readouterr()
    assert sweep(tmp_path, *common, "break_database_after_step=2", "restore_database_after_step=6") == 0
    assert said_lines(capsys, "could not remove") == []
    _, done = trials(tmp_path)
    assert done.state == TrialState.COMPLETE and done.intermediate_values == {s: 3 * s / 6 for s in range(1, 7)}
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{tmp_path}/sweeps.db")
    kept = study._storage.get_study_system_attrs(study._study_id)[checkpoints.KEPT_ATTR][str(done.number)]
    assert kept["step"] == 6 and stored(tmp_path) == [f"sweeps.checkpoints/{kept['id']}"]
    everything = sorted(str(p.relative_to(tmp_path / "sweeps.checkpoints")) for p in (tmp_path / "sweeps.checkpoints").rglob("*"))
    assert everything == [STUDY, f"{STUDY}/trial_{done.number}", kept["id"]]  # no empty folder of the stopped trial


def test_a_lost_workers_trial_not_run_again_leaves_no_checkpoint(tmp_path):
    study, where, rec = lost_trial(tmp_path, retry=False)
    assert [t.state for t in study.trials] == [TrialState.FAIL]
    assert not (Path(where) / rec["id"]).exists() and not (Path(where) / "lost" / "trial_0").exists()


def test_a_lost_workers_trial_not_run_again_leaves_nothing_under_its_folder_in_a_bucket(tmp_path, s3_bucket):
    """Its folder under the store's prefix goes whole: the checkpoint the database names and what its job left
    beside it (a note written while the database was away); another trial's folder stays."""
    where = "s3://runs/team"
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db", study_name="lost")
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    rec = {"id": checkpoints.new_id(where, "lost", trial.number, 0, 2), "step": 2, "repeat": 0}
    other = checkpoints.new_id(where, "lost", trial.number + 1, 0, 2)
    for key in (rec["id"], other):
        s3_bucket.put_object(Bucket="runs", Key=key, Body=b"state")
    assert checkpoints.note_unrecorded(where, "lost", trial.number, {**rec, "step": 4, "reports": [[4, 0.4]]})
    as_lost_workers(trial, **{CHECKPOINT_ATTR: rec})
    assert fail_stale_trials(study, grace_period=3600, retry=False, checkpoints=where) == [trial.number]
    assert [o["Key"] for o in s3_bucket.list_objects_v2(Bucket="runs")["Contents"]] == [other]


# ------------------------------------------------------------------ the MNIST trainer, through a sweep

MNIST_SMALL = ["data.train_subset=1000", "data.test_subset=500", "trainer.epochs=3", "trainer.threads=1",
               "trainer.progress=false", "trainer.ema=0.99", "trainer.ema_warmup=true", "data/augment=strong",
               "schedule.anneal_epochs=1", "model=tiny", "hydra/sweeper/pruner=none"]


def mnist_sweep(tmp_path: Path, study: str, *overrides: str) -> int:
    from mnist_arch.train import main

    return in_process(main, ["mnist-train", "-m", "optim.lr=choice(0.05)", *MNIST_SMALL,
                             f"hydra.sweeper.storage=sqlite:///{tmp_path}/sweeps.db", f"hydra.sweeper.study_name={study}",
                             "hydra.sweeper.n_trials=1", f"hydra.sweep.dir={tmp_path}/{study}", *overrides])


def test_an_mnist_trial_stopped_after_an_epoch_ends_bit_for_bit_as_an_uninterrupted_one(tmp_path):
    assert mnist_sweep(tmp_path, "whole") == 0
    stop = "+trainer.callbacks.stop={_target_: tests.toy_app.callbacks.StopAfterCheckpoint, epoch: 2}"
    assert mnist_sweep(tmp_path, "stopped", stop) == 130
    assert mnist_sweep(tmp_path, "stopped") == 0
    (whole,), (stopped, resumed) = trials(tmp_path, "whole"), trials(tmp_path, "stopped")
    assert stopped.user_attrs[CHECKPOINT_ATTR]["step"] == 2 and stopped.user_attrs["interrupted"] is True
    assert resumed.state == TrialState.COMPLETE
    assert resumed.values == whole.values  # compared with ==: the same floats
    assert resumed.intermediate_values == whole.intermediate_values
    assert resumed.user_attrs["curve"] == whole.user_attrs["curve"]
    history = lambda study, n: [{k: v for k, v in h.items() if "seconds" not in k} for h in json.loads(
        (tmp_path / study / str(n) / "metrics.json").read_text())["history"]]
    assert history("stopped", resumed.number) == history("whole", whole.number)
    assert "resumed from the checkpoint of epoch 2: training from epoch 3" in (
        tmp_path / "stopped" / str(resumed.number) / "train.log").read_text()
    assert stored(tmp_path) == []


def test_an_mnist_checkpoint_of_another_config_is_not_loaded_and_the_run_starts_at_epoch_1(tmp_path, capsys):
    stop = "+trainer.callbacks.stop={_target_: tests.toy_app.callbacks.StopAfterCheckpoint, epoch: 2}"
    assert mnist_sweep(tmp_path, "changed", stop) == 130
    capsys.readouterr()
    assert mnist_sweep(tmp_path, "changed", "trainer.label_smoothing=0.1") == 0  # the command changed
    said = said_lines(capsys, "not loaded")
    assert said == ["the checkpoint offered to resume from is not loaded: it belongs to another config: "
                    "trainer.label_smoothing (0.0 -> 0.1); training from epoch 1"]
    _, resumed = trials(tmp_path, "changed")
    assert resumed.state == TrialState.COMPLETE and len(resumed.user_attrs["curve"]) == 3


def test_an_unreadable_mnist_checkpoint_is_one_line_and_the_run_starts_at_epoch_1(tmp_path, capsys):
    stop = "+trainer.callbacks.stop={_target_: tests.toy_app.callbacks.StopAfterCheckpoint, epoch: 1}"
    assert mnist_sweep(tmp_path, "torn", stop) == 130
    (ckpt,) = (tmp_path / "sweeps.checkpoints").rglob("*.ckpt")
    ckpt.write_bytes(ckpt.read_bytes()[:100])  # what a store that is not atomic leaves after a kill
    capsys.readouterr()
    assert mnist_sweep(tmp_path, "torn") == 0
    said = said_lines(capsys, "not loaded")
    assert len(said) == 1 and said[0].startswith("the checkpoint offered to resume from is not loaded: it cannot be read (")
    _, resumed = trials(tmp_path, "torn")
    assert resumed.state == TrialState.COMPLETE and len(resumed.user_attrs["curve"]) == 3


def test_the_checkpoint_of_an_mnist_run_holds_its_whole_state(tmp_path):
    import torch

    from mnist_arch import checkpoint
    from tests.support import compose

    cfg = compose(*[o for o in MNIST_SMALL if not o.startswith("hydra")])
    state = {}

    class Keep:
        def on_epoch_end(self, epoch, record):
            return False

        def on_checkpoint(self, path, epoch):
            state[epoch] = torch.load(path, weights_only=False)

    from mnist_arch.trainer import fit

    fit(cfg, [Keep()])
    assert sorted(state) == [1, 2, 3]  # after every epoch, the last included
    last = state[3]
    assert sorted(last) == ["average", "config", "epoch", "format", "history", "model", "optimizer", "random",
                            "schedule", "seconds"]
    assert sorted(last["random"]) == ["generator", "numpy", "python", "torch"]
    assert [h["epoch"] for h in last["history"]] == [1, 2, 3] and last["schedule"]["steps"] > 0
    assert "trainer.threads" not in last["config"] and last["config"]["trainer.epochs"] == 3
    with pytest.raises(checkpoint.CheckpointRefused, match=r"^it belongs to another config: trainer.epochs \(3 -> 4\)$"):
        path = tmp_path / "c.ckpt"
        torch.save(last, path)
        checkpoint.load(path, compose(*[o for o in MNIST_SMALL if not o.startswith("hydra")], "trainer.epochs=4"),
                        torch.device("cpu"))
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(checkpoint.CheckpointRefused, match=r"^it cannot be read \(UnpicklingError"):
        checkpoint.load(path, cfg, torch.device("cpu"))
    torch.save({"format": 0}, path)
    with pytest.raises(checkpoint.CheckpointRefused, match=r"^it is not a checkpoint of this trainer \(format 0, expected 1\)$"):
        checkpoint.load(path, cfg, torch.device("cpu"))


# ------------------------------------------------------------------ real processes, real signals (slow)


def checkpointed(tmp_path: Path, study: str, step: int, db: str = "sweeps.db") -> bool:
    """Whether a RUNNING trial's checkpoint record has reached ``step`` (read-only, as sweep-results reads)."""
    from tests.test_interrupts import trials as read

    return any(t.state == TrialState.RUNNING and (t.user_attrs.get(CHECKPOINT_ATTR) or {}).get("step", 0) >= step
               for t in read(tmp_path, study))


def mnist_sweep_args(folder: Path, study: str) -> list:
    return ["mnist_arch.train", "-m", "optim.lr=choice(0.05)", *MNIST_SMALL, "trainer.epochs=5",
            f"hydra.sweeper.storage=sqlite:///{folder}/sweeps.db", f"hydra.sweeper.study_name={study}",
            "hydra.sweeper.n_trials=1", f"hydra.sweep.dir={folder}/{study}"]


@pytest.fixture(scope="module")
def uninterrupted_mnist_sweep(tmp_path_factory) -> Path:
    """The folder of the one-trial MNIST sweep (study ``whole``) that the stopped ones must end as."""
    from .support import run_cli

    folder = tmp_path_factory.mktemp("whole")
    whole = run_cli(mnist_sweep_args(folder, "whole"), cwd=folder)
    assert whole.returncode == 0, whole.stderr[-2000:]
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_mnist_sweep_stopped_by_a_signal_retrains_at_most_one_epoch_and_ends_as_an_uninterrupted_one(
        tmp_path, sig, code, uninterrupted_mnist_sweep):
    """``mnist-train -m`` in its own process, stopped as a user (Ctrl-C to the process group) or a scheduler
    (SIGTERM) would, at whatever moment after the second epoch's checkpoint; the same command resumes."""
    from tests.test_interrupts import start, wait_for

    from .support import run_cli

    args = mnist_sweep_args(tmp_path, "stopped")
    proc = start(args, tmp_path)
    try:
        wait_for("the second epoch's checkpoint", lambda: checkpointed(tmp_path, "stopped", 2), timeout=600)
        os.killpg(proc.pid, sig) if sig == signal.SIGINT else os.kill(proc.pid, sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == code, err[-2000:]
    assert "Traceback" not in out + err
    again = run_cli(args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    (w,), (stopped, resumed) = trials(uninterrupted_mnist_sweep, "whole"), trials(tmp_path, "stopped")
    reported, saved = len(stopped.user_attrs["curve"]), stopped.user_attrs[CHECKPOINT_ATTR]["step"]
    assert saved >= 2 and reported - saved <= 1  # at most the epoch under way when the signal came is trained again
    log = (tmp_path / "stopped" / str(resumed.number) / "train.log").read_text()
    assert f"resumed from the checkpoint of epoch {saved}: training from epoch {saved + 1}" in log
    assert len(re.findall(r"- epoch +\d+/5 ", log)) == 5 - saved  # the epochs this job trained
    assert resumed.values == w.values and resumed.intermediate_values == w.intermediate_values
    assert resumed.user_attrs["curve"] == w.user_attrs["curve"]
    assert stored(tmp_path) == []


@pytest.mark.slow
def test_a_killed_sweeps_trial_is_queued_with_its_checkpoint_by_retry_stale_trials_and_resumes_there(tmp_path):
    """SIGKILL: nothing is recorded; the next invocation on this host finds the worker gone at once."""
    from tests.test_interrupts import start, wait_for

    from .support import run_cli

    args = ["tests.toy_app.app", "-m", "x=choice(3)", f"hydra.sweeper.storage=sqlite:///{tmp_path}/sweeps.db",
            "hydra.sweeper.study_name=killed", f"hydra.sweep.dir={tmp_path}/sweep", "hydra/sweeper/pruner=none",
            "steps=6", "checkpoint=true", "hydra.sweeper.n_trials=1", "hydra.sweeper.grace_period=3600"]
    proc = start([*args, "sleep=0.6", "hang_after_step=2"], tmp_path)  # killed as step 3 is under way
    try:
        wait_for("the second step's checkpoint", lambda: checkpointed(tmp_path, "killed", 2), timeout=600)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    again = run_cli([*args, "sleep=0", "hydra.sweeper.retry_stale_trials=true"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "trial 0 re-queued with the same parameters and its checkpoint of step 2" in again.stdout + again.stderr
    lost, resumed = trials(tmp_path, "killed")
    assert lost.state == TrialState.FAIL and lost.user_attrs["lost_worker"] is True
    assert resumed.state == TrialState.COMPLETE and resumed.value == 3.0
    assert resumed.user_attrs["steps_ran"] == [3, 4, 5, 6]
    assert resumed.intermediate_values == {s: 3 * s / 6 for s in range(1, 7)}
    assert stored(tmp_path) == []


@pytest.mark.slow
def test_a_sweep_stopped_by_a_database_outage_resumes_its_trial_from_its_checkpoint_by_the_same_command(tmp_path):
    from .support import run_cli

    args = ["tests.toy_app.app", "-m", "x=choice(3)", f"hydra.sweeper.storage=sqlite:///{tmp_path}/sweeps.db",
            "hydra.sweeper.study_name=outage", f"hydra.sweep.dir={tmp_path}/sweep", "hydra/sweeper/pruner=none",
            "steps=6", "checkpoint=true", "hydra.sweeper.n_trials=1", "hydra.sweeper.storage_patience=2"]
    stopped = run_cli([*args, "break_database_after_step=3"], cwd=tmp_path)
    assert stopped.returncode == 1 and "the database has been unreachable for" in stopped.stderr, stopped.stderr[-2000:]
    (tmp_path / "sweeps.db").rmdir()  # the database is back
    (tmp_path / "sweeps.db.away").rename(tmp_path / "sweeps.db")
    again = run_cli(args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    # steps 4-6 ran in the outage: their checkpoints and reports were kept beside the database, not lost
    assert "trial 0 re-queued with the same parameters and its checkpoint of step 6" in again.stdout + again.stderr
    lost, resumed = trials(tmp_path, "outage")
    assert lost.user_attrs["error"] == "stopped by its sweep while the database was away"
    assert resumed.state == TrialState.COMPLETE and resumed.value == 3.0
    assert "steps_ran" not in resumed.user_attrs  # nothing trained again
    assert resumed.intermediate_values == {s: 3 * s / 6 for s in range(1, 7)}
    assert stored(tmp_path) == []


@pytest.mark.slow
def test_a_submitit_job_requeued_on_its_timeout_signal_resumes_from_its_checkpoint(tmp_path):
    """submitit's local launcher sends the job its timeout signal (SLURM's USR2) 30 s before its time is up
    (here up to 6 times) and runs it again: the same trial, from its checkpoint, each step once."""
    from .support import run_cli

    proc = run_cli(["tests.toy_app.app", "-m", "x=choice(2)", f"hydra.sweeper.storage=sqlite:///{tmp_path}/sweeps.db",
                    "hydra.sweeper.study_name=requeued", f"hydra.sweep.dir={tmp_path}/sweep", "hydra/sweeper/pruner=none",
                    "steps=6", "checkpoint=true", "sleep=36", "hydra.sweeper.n_trials=1",
                    "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=1", "+hydra.launcher.max_num_timeout=6"],
                   cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (t,) = trials(tmp_path, "requeued")
    assert t.state == TrialState.COMPLETE and t.value == 2.0
    # 36 s of steps cannot finish before the signal at 30 s: it ran at least twice, each from the last checkpoint; a
    # step is run again only where the signal fell between its end and its checkpoint
    steps = t.user_attrs["steps_ran"]
    assert steps == sorted(steps) and sorted(set(steps)) == [1, 2, 3, 4, 5, 6] and len(steps) <= 8
    assert t.intermediate_values == {s: 2 * s / 6 for s in range(1, 7)}
    (log,) = (tmp_path / "sweep" / ".submitit").rglob("*_0_log.out")
    assert "Requeued job" in log.read_text()  # submitit's own word that it ran the job again
    assert stored(tmp_path) == []


def test_a_refused_checkpoint_names_what_differs_and_what_does_not_fit():
    import torch

    from mnist_arch import checkpoint

    saved = {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "gone": 1}
    now = {"a": 0, "b": 0, "c": 0, "d": 0, "e": 5, "new": 2}
    assert checkpoint.differences(saved, now) == "a (1 -> 0), b (2 -> 0), c (3 -> 0) and 3 more"
    assert checkpoint.differences({"gone": 1}, {"new": "x"}) == "gone (1 -> unset), new (unset -> 'x')"
    assert checkpoint.differences(saved, dict(saved)) == ""
    assert checkpoint.differences({"a": 1, "b": 2, "c": 3}, {}) == "a (1 -> unset), b (2 -> unset), c (3 -> unset)"
    model, other = torch.nn.Linear(2, 3), torch.nn.Linear(3, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    generator = torch.Generator()
    state = {"model": other.state_dict(), "optimizer": opt.state_dict(), "schedule": schedule.state_dict(),
             "average": None, "random": checkpoint.random_state(generator)}
    with pytest.raises(checkpoint.CheckpointRefused, match=r"^it does not fit this run \(RuntimeError: Error\(s\) in "
                                                           r"loading state_dict for Linear: size mismatch"):
        checkpoint.restore(state, model, opt, schedule, None, generator)


def test_a_checkpoint_records_the_config_resolved_without_what_does_not_change_training():
    from mnist_arch import checkpoint
    from tests.support import compose

    from omegaconf import open_dict

    cfg = compose("trainer.epochs=7", "trainer.threads=3")
    with open_dict(cfg):
        cfg.epochs_again = "${trainer.epochs}"  # an app key that interpolates another
    recorded = checkpoint.run_config(cfg)
    assert recorded["trainer.epochs"] == 7 and recorded["seed"] == cfg.seed
    assert recorded["epochs_again"] == 7  # interpolations resolved: the values trained with
    assert not any(k.startswith(("trainer.threads", "trainer.progress", "trainer.callbacks", "tracking")) for k in recorded)
    del recorded["epochs_again"]
    with open_dict(cfg):
        cfg.nothing = {}  # an empty group is a value too: removing it changes the config
    assert checkpoint.run_config(cfg)["nothing"] == {}
    assert recorded == checkpoint.run_config(compose("trainer.epochs=7", "trainer.threads=1", "trainer.progress=false"))


def test_a_file_that_is_not_this_trainers_checkpoint_is_refused_in_one_line(tmp_path):
    import pickle

    import torch

    from mnist_arch import checkpoint
    from tests.support import compose

    cfg, path = compose(), tmp_path / "c.pt"
    torch.save([1, 2], path)
    with pytest.raises(checkpoint.CheckpointRefused, match=rf"^it is not a checkpoint of this trainer \(format 'list', "
                                                           rf"expected {checkpoint.FORMAT}\)$"):
        checkpoint.load(path, cfg, torch.device("cpu"))
    torch.save({"format": 0}, path)
    with pytest.raises(checkpoint.CheckpointRefused, match=r"\(format 0, expected"):
        checkpoint.load(path, cfg, torch.device("cpu"))
    path.write_bytes(pickle.dumps("x") * 3 + b"\n  two  spaces\n")
    with pytest.raises(Exception) as raw:
        torch.load(path, weights_only=False)
    words = " ".join(str(raw.value).split())
    with pytest.raises(checkpoint.CheckpointRefused) as refused:
        checkpoint.load(path, cfg, torch.device("cpu"))
    assert str(refused.value) == f"it cannot be read ({type(raw.value).__name__}: {words[:160]})"


def test_the_checkpoint_api_moves_the_record_and_removes_what_it_replaces(tmp_path, caplog, monkeypatch):
    """In-process, on a real SQLite study and file store: a job's saves, a repeat's view of another's
    record, a resumed trial's first save removing the stopped trial's folder, a record the database
    cannot take, and a file that went missing."""
    from optuna.exceptions import StorageInternalError

    from sweeper.api import SweepTrial
    from sweeper.errors import squashed

    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db", study_name="api")
    where = str(tmp_path / "ckpt")
    store = AtomicFileSystemArtifactStore(where)
    files = lambda: sorted(str(p.relative_to(where)) for p in Path(where).rglob("*") if p.is_file())
    body = tmp_path / "state.bin"
    body.write_bytes(b"state")

    stopped = study.ask()  # the trial a stop left, and its last checkpoint
    old = {"id": checkpoints.new_id(where, "api", stopped.number, 0, 3), "step": 3, "repeat": 0}
    store.write(old["id"], io.BytesIO(b"old state"))
    checkpoints.mark_stopped(where, "api", stopped.number)  # its folder holds more than the checkpoint
    trial = study.ask()
    trial.set_user_attr(CHECKPOINT_ATTR, old)
    job = SweepTrial(study, trial.number, checkpoint_store=where)
    assert job.checkpoint.step == 3 and job.checkpoint.load(tmp_path / "in.bin") == 3
    assert (tmp_path / "in.bin").read_bytes() == b"old state" and not list(tmp_path.glob(".in.bin*"))
    job.checkpoint.save(body, 4)  # the stopped trial's folder goes with its file
    assert files() == [f"api/trial_{trial.number}/{Path(job.checkpoint._record['id']).name}"]
    assert not (Path(where) / "api" / f"trial_{stopped.number}").exists()
    first = files()
    job.checkpoint.save(body, 5)  # the record moves on, the step 4 file goes, the trial's own folder stays
    assert job.checkpoint.step == 5 and len(files()) == 1 and files() != first
    assert study.trials[trial.number].user_attrs[CHECKPOINT_ATTR] == job.checkpoint._record

    def away(*args):
        raise StorageInternalError("the database is away")

    recorded = files()
    folder = f"api/trial_{trial.number}"
    note = Path(where) / folder / checkpoints.UNRECORDED_NOTE
    monkeypatch.setattr(job._trial, "set_user_attr", away)
    monkeypatch.setattr(job._trial, "report", away)
    with caplog.at_level("WARNING", logger="sweeper.api"):
        assert job.report(0.6, 6) is False  # the database is away: kept for the note and the next report
        job.checkpoint.save(body, 6)  # the record cannot move: the step 5 file stays, a note names the new one
        assert job.report(0.7, 7) is False
        job.checkpoint.save(body, 7)  # the note moves on, the step 6 file goes
    assert job.checkpoint.step == 5 and study.trials[trial.number].user_attrs[CHECKPOINT_ATTR]["step"] == 5
    noted = json.loads(note.read_text())
    assert noted["step"] == 7 and noted["repeat"] == 0 and noted["reports"] == [[6, 0.6], [7, 0.7]]
    assert files() == sorted([*recorded, f"{folder}/{Path(noted['id']).name}", f"{folder}/{checkpoints.UNRECORDED_NOTE}"])
    assert checkpoints.unrecorded(where, "api", trial.number) == noted
    assert "(recording its checkpoint of step 6: the database is away); the job goes on" in caplog.text
    assert "(reporting step 7: the database is away); the job goes on" in caplog.text
    monkeypatch.undo()
    assert job.report(0.8, 8) is False  # the database is back: the reports it missed go first, in order
    assert study.trials[trial.number].intermediate_values == {6: 0.6, 7: 0.7, 8: 0.8}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Optuna warns of a step reported twice: none is sent again
        assert job.report(0.66, 6) is False and job.report(0.88, 8) is False
    assert study.trials[trial.number].intermediate_values == {6: 0.6, 7: 0.7, 8: 0.8}
    job.checkpoint.save(body, 8)  # recorded: the note, its file and the step 5 file go
    assert job.checkpoint.step == 8 and len(files()) == 1 and not note.exists()
    assert checkpoints.unrecorded(where, "api", trial.number) is None

    second = study.ask()  # the second repeat of a trial whose first repeat's record is still there
    second.set_user_attr("repeat", 1)
    second.set_user_attr(CHECKPOINT_ATTR, {**old, "id": "api/x.ckpt"})
    assert SweepTrial(study, second.number, checkpoint_store=where).checkpoint.step is None

    plain = study.ask()  # a record without its repeat is the first repeat's (or the job's only one)
    plain.set_user_attr(CHECKPOINT_ATTR, {"id": "api/y.ckpt", "step": 7})
    assert SweepTrial(study, plain.number, checkpoint_store=where).checkpoint.step == 7

    gone = study.ask()
    gone.set_user_attr(CHECKPOINT_ATTR, {"id": f"api/trial_{gone.number}/missing.ckpt", "step": 2, "repeat": 0})
    with pytest.raises(Exception) as why:
        store.open_reader(f"api/trial_{gone.number}/missing.ckpt")
    caplog.clear()
    with caplog.at_level("WARNING", logger="sweeper.api"):
        assert SweepTrial(study, gone.number, checkpoint_store=where).checkpoint.load(tmp_path / "in2.bin") is None
    assert caplog.messages == [f"trial {gone.number}: its checkpoint of step 2 cannot be read ({type(why.value).__name__}: "
                               f"{squashed(why.value, 160)}); starting from the first step"]
    assert not list(tmp_path.glob("*in2.bin*"))
