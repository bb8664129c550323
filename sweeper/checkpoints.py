"""Trial checkpoints: where a job's saved state lives, how it is written, and which trial resumes from it.

A job saves its state through ``sweeper.api`` (``current_trial().checkpoint.save(path, step)``)
as a file of its own format; the sweeper keeps it in an Optuna artifact store and records it on
the trial as the user attribute ``checkpoint``: ``{"id", "step", "repeat"}``. A trial stopped
before it finished (an interrupt, a lost worker with ``retry_stale_trials``) is queued again with
its point, its finished repeats and that record; the job of the queued trial finds it with
``checkpoint.load(path)`` and goes on from ``step``. The stopped trial's per-step reports up to
that step are replayed onto the new trial first, so the pruner sees one history, as it would have.

Where (``hydra.sweeper.checkpoint.store``): null puts them beside a SQLite or journal file
(``sweeps.db`` -> ``sweeps.checkpoints/``), else under ``outputs/checkpoints`` where the sweep
started; a path (a shared file system for many machines); ``s3://bucket[/prefix]`` (Optuna's
Boto3ArtifactStore: boto3, credentials from the environment); or ``{_target_: ...}``, any Optuna
artifact store. Writes are atomic: a file store writes a temporary file and renames it, and the
trial's record moves to a new checkpoint only once it is whole, so a kill during a write never
leaves a half-written file that is loaded.

A sweep stopped by a database outage cannot record its running trial; it leaves a note beside the
trial's checkpoints instead (``mark_stopped``), and the next invocation, finding the trial RUNNING
with its worker gone, queues it again as it would an interrupted one (without ``retry_stale_trials``).
The checkpoints its job saved while the database was away are not lost: the latest is named by a
note beside them (``note_unrecorded``, with the reports the database did not take), and the trial
queued again goes on from it.

Disk stays bounded: a save removes the checkpoint it replaces, and a finished trial's are
removed (``checkpoint.keep_best``: the best trial's last one is kept, listed on the study).

Imports Optuna's artifact stores only when a checkpoint is written or read.
"""

import contextlib
import logging
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, Dict, Optional

from .repeats import CARRIED, CARRIED_STEPS_ATTR, CONTINUES_ATTR, REPEAT_VALUES_ATTR, REPEATS_N_ATTR

log = logging.getLogger(__name__)

CHECKPOINT_ATTR = "checkpoint"  # the trial's latest checkpoint: {"id", "step", "repeat"}
KEPT_ATTR = "kept_checkpoints"  # study system attribute: {trial number: record} of checkpoints kept after the trial
S3_PREFIX = "s3://"
SERVER_DEFAULT = Path("outputs") / "checkpoints"  # a database server's sweep: under the folder it started in


class CheckpointStoreError(ValueError):
    """The configured checkpoint store cannot be used (one line, for the sweep's error)."""


def location(store: Any, storage_url: Optional[str]) -> Any:
    """Where the sweep's checkpoints go: an absolute folder, an ``s3://`` URL, or a ``{_target_: ...}`` node as given."""
    from .storage import local_file

    if store is not None and not isinstance(store, str):
        return store  # an artifact store's config node
    if store:
        return store if store.startswith(S3_PREFIX) else str(Path(store).expanduser().resolve())
    file = local_file(storage_url)
    if file is not None:
        return str(file.with_name(f"{file.stem}.checkpoints"))
    return str(SERVER_DEFAULT.resolve())


def shown(where: Any) -> str:
    """The location in words, for the sweep's header line."""
    if isinstance(where, str):
        return where
    return f"{where.get('_target_', 'an artifact store')} (hydra.sweeper.checkpoint.store)"


class AtomicFileSystemArtifactStore:
    """Optuna's FileSystemArtifactStore, written atomically: a temporary file beside the target, then a rename.

    The layout is Optuna's (a file per artifact id under ``base_path``); ids may hold folders.
    """

    def __init__(self, base_path: str):
        from optuna.artifacts import FileSystemArtifactStore

        self.base_path = Path(base_path)
        self._store = FileSystemArtifactStore(self.base_path)

    def open_reader(self, artifact_id: str):
        return self._store.open_reader(artifact_id)

    def write(self, artifact_id: str, content_body) -> None:
        target = self._store._get_filepath(artifact_id)  # checks the id stays inside base_path
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(f".{target.name}.part-{os.getpid()}")
        try:
            try:
                f = open(part, "wb")
            except FileNotFoundError:  # another job removed the emptied study folder after the mkdir above
                target.parent.mkdir(parents=True, exist_ok=True)
                f = open(part, "wb")
            with f:
                shutil.copyfileobj(content_body, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(part, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()

    def remove(self, artifact_id: str) -> None:
        self._store.remove(artifact_id)

    def remove_folder(self, folder: str) -> None:
        """Remove a folder of artifacts (a finished trial's, with any temporary file a kill left)."""
        path = self._store._get_filepath(folder)
        shutil.rmtree(path, ignore_errors=True)
        for parent in path.parents:  # the study's folder once its last trial's is gone; the store's own stays
            if parent == self.base_path or self.base_path not in parent.parents:
                break
            try:
                parent.rmdir()
            except OSError:  # not empty: other trials' checkpoints
                break


def open_store(where: Any) -> Any:
    """The artifact store at ``where`` (from ``location``); CheckpointStoreError in one line if it cannot be made."""
    if isinstance(where, str) and where.startswith(S3_PREFIX):
        bucket = where[len(S3_PREFIX):].split("/", 1)[0]
        if not bucket:
            raise CheckpointStoreError(f"hydra.sweeper.checkpoint.store={where!r} names no bucket: s3://bucket[/prefix]")
        try:
            from optuna.artifacts import Boto3ArtifactStore

            return Boto3ArtifactStore(bucket)
        except ImportError as exc:
            raise CheckpointStoreError(f"hydra.sweeper.checkpoint.store={where!r} needs boto3 ({exc}): "
                                       "pip install boto3") from None
    if isinstance(where, str):
        return AtomicFileSystemArtifactStore(where)
    from hydra.utils import instantiate

    try:
        return instantiate(where)
    except Exception as exc:
        from .errors import one_line

        raise CheckpointStoreError(f"hydra.sweeper.checkpoint.store cannot be made: {one_line(exc)}") from None


def check_store(where: Any) -> None:
    """At the sweep's start: a folder that can be created and written, or a store that can be made."""
    if isinstance(where, str) and not where.startswith(S3_PREFIX):
        try:
            Path(where).mkdir(parents=True, exist_ok=True)
            probe = Path(where) / f".probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise CheckpointStoreError(f"hydra.sweeper.checkpoint.store: {where} cannot be written "
                                       f"({exc.strerror or exc})") from None
    elif isinstance(where, str):  # s3: a bucket that exists, with credentials that may write to it
        import io

        from .errors import one_line

        store = open_store(where)
        probe = f"{_prefix(where)}.probe-{uuid.uuid4().hex[:8]}"
        try:
            store.write(probe, io.BytesIO(b""))
            store.remove(probe)
        except Exception as exc:
            raise CheckpointStoreError(f"hydra.sweeper.checkpoint.store: {where} cannot be written "
                                       f"({type(exc).__name__}: {one_line(exc)})") from None
    else:
        open_store(where)


def _remove_s3_folder(store: Any, folder: str) -> None:
    """Remove every object under ``folder/`` of an S3 store's bucket (a trial's checkpoints and notes)."""
    pages = store.client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket, Prefix=folder.rstrip("/") + "/")
    for page in pages:
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            store.client.delete_objects(Bucket=store.bucket, Delete={"Objects": keys})


def _prefix(where: Any) -> str:
    """A prefix for artifact ids: the path after an s3 bucket."""
    if isinstance(where, str) and where.startswith(S3_PREFIX):
        rest = where[len(S3_PREFIX):].split("/", 1)
        return rest[1].strip("/") + "/" if len(rest) > 1 and rest[1].strip("/") else ""
    return ""


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "study"


def trial_folder(where: Any, study_name: str, number: int) -> str:
    """The artifact-id folder of one trial's checkpoints."""
    return f"{_prefix(where)}{_safe(study_name)}/trial_{number}"


def new_id(where: Any, study_name: str, number: int, repeat: int, step: int) -> str:
    """A fresh artifact id: a save never overwrites the checkpoint a record names."""
    return f"{trial_folder(where, study_name, number)}/repeat{repeat}_step{step}_{uuid.uuid4().hex[:8]}.ckpt"


def record(attrs: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """A trial's checkpoint record from its user attributes, if it has a usable one."""
    rec = attrs.get(CHECKPOINT_ATTR)
    if isinstance(rec, dict) and isinstance(rec.get("id"), str) and isinstance(rec.get("step"), int):
        return rec
    return None


def remove(where: Any, rec: Optional[Dict[str, Any]], folders=()) -> None:
    """Remove a checkpoint (and, in a file store, the trials' folders it leaves); never raises."""
    try:
        store = open_store(where)
        if rec is not None:
            with contextlib.suppress(Exception):
                store.remove(rec["id"])
        for folder in folders:
            if isinstance(store, AtomicFileSystemArtifactStore):
                store.remove_folder(folder)
            elif isinstance(where, str) and where.startswith(S3_PREFIX):
                _remove_s3_folder(store, folder)
    except Exception as exc:  # a checkpoint left behind costs disk, not results
        log.warning("could not remove a checkpoint (%s): %s", rec and rec.get("id"), exc)


STOPPED_MARK = "stopped_by_sweep"  # beside a trial's checkpoints: its sweep stopped (database outage), no kill


def mark_stopped(where: Any, study_name: str, number: int) -> None:
    """Note in the store (the database is away) that the sweep stopped this trial: like an interrupt, not
    a killed worker, so the next invocation queues its point again with its checkpoint. Never raises."""
    import io

    try:
        open_store(where).write(f"{trial_folder(where, study_name, number)}/{STOPPED_MARK}", io.BytesIO(b""))
    except Exception as exc:
        log.warning("could not note trial %d as stopped by the sweep (%s); retry_stale_trials=true runs it again",
                    number, exc)


def stopped_by_sweep(where: Any, study_name: str, number: int) -> bool:
    """Whether the store holds ``mark_stopped``'s note for this trial."""
    try:
        with open_store(where).open_reader(f"{trial_folder(where, study_name, number)}/{STOPPED_MARK}"):
            return True
    except Exception:
        return False


UNRECORDED_NOTE = "unrecorded.json"  # beside a trial's checkpoints: its latest one, saved while the database was away


def note_unrecorded(where: Any, study_name: str, number: int, rec: Dict[str, Any]) -> bool:
    """Name in the store the checkpoint a job saved while the database was away (``rec``: its record and
    ``reports``, the per-step reports the database did not take up to its step). False when it cannot be
    written; never raises."""
    import io
    import json

    try:
        open_store(where).write(f"{trial_folder(where, study_name, number)}/{UNRECORDED_NOTE}",
                                io.BytesIO(json.dumps(rec).encode()))
        return True
    except Exception as exc:
        log.warning("trial %d: could not note its checkpoint of step %s (%s)", number, rec.get("step"), exc)
        return False


def unrecorded(where: Any, study_name: str, number: int) -> Optional[Dict[str, Any]]:
    """``note_unrecorded``'s note for this trial, if the store holds a usable one."""
    import json

    try:
        with open_store(where).open_reader(f"{trial_folder(where, study_name, number)}/{UNRECORDED_NOTE}") as reader:
            rec = json.loads(reader.read())
    except Exception:
        return None
    ok = record({CHECKPOINT_ATTR: rec}) is not None and isinstance(rec.get("reports"), list)
    return rec if ok else None


def clear_unrecorded(where: Any, study_name: str, number: int) -> None:
    """Remove the note: the database took a later checkpoint. Never raises."""
    with contextlib.suppress(Exception):
        open_store(where).remove(f"{trial_folder(where, study_name, number)}/{UNRECORDED_NOTE}")


def later_of(rec: Optional[Dict[str, Any]], noted: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The later checkpoint: the record the database took, or ``noted`` (``unrecorded``'s note, its record;
    without its repeat, the first repeat's, as a record)."""
    if noted is not None and (rec is None or noted["step"] > rec["step"]):
        return {"id": noted["id"], "step": noted["step"], "repeat": int(noted.get("repeat", 0))}
    return rec


def carried_over(trial: Any, noted: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """What a trial queued again after an interrupt or a lost worker carries: its finished repeats, its
    checkpoint, and the per-step reports the resumed job will not report again.

    Reports carried: all of the first repeat's once it finished, else those up to the checkpoint's
    step (none without one: the job starts again from its first step). ``noted``: the store's note of a
    checkpoint saved while the database was away (``unrecorded``), carried, with its reports, where it is
    the later one.
    """
    attrs = trial.user_attrs
    done = len(attrs.get(REPEAT_VALUES_ATTR) or [])
    n = int(attrs.get(REPEATS_N_ATTR, 1))
    carried: Dict[str, Any] = {}
    if 0 < done < n:
        carried.update({key: attrs[key] for key in CARRIED if key in attrs})
    rec = record(attrs)
    if rec is not None and int(rec.get("repeat", 0)) != done:
        rec = None
    reports = dict(trial.intermediate_values)
    later = later_of(rec, noted) if noted is not None and int(noted.get("repeat", 0)) == done else rec
    if later is not rec:  # saved while the database was away: its reports come with it
        rec = later
        reports.update({int(s): float(v) for s, v in noted["reports"]})
    if rec is not None:
        carried[CHECKPOINT_ATTR] = rec
    if not carried:
        return {}
    last = float("inf") if done else rec["step"]  # nothing done: what it carries is its checkpoint
    carried[CONTINUES_ATTR] = trial.number
    carried[CARRIED_STEPS_ATTR] = [[int(s), float(v)] for s, v in sorted(reports.items()) if s <= last]
    return carried
