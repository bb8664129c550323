"""Faults outside the sweep's control: a full disk, an unwritable output folder, an interrupted data fetch."""

import contextlib
import sqlite3
import subprocess
import uuid
from pathlib import Path

import pytest

from mnist_arch.fetch import DataUnavailableError, ensure_mnist, raw_dir, write_idx_from_pickle

from .support import run_cli
from .test_data import synthetic_pickle

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def small_disk(size: str):
    """A tmpfs of ``size`` (root only); skipped where it cannot be mounted."""
    mount = Path(f"/tmp/mnist-small-disk-{uuid.uuid4().hex[:8]}")
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True, text=True)
    if proc.returncode != 0:
        mount.rmdir()
        pytest.skip(f"cannot mount a small tmpfs here to fill a disk: {proc.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)
        mount.rmdir()


def test_full_disk_stops_the_sweep_clearly_and_keeps_the_database_sound(tmp_path):
    with small_disk("600k") as disk:
        proc = run_cli(["tests.toy_app.app", "-m", "x=range(0,1000)", "hydra.sweeper.n_trials=500",
                        f"hydra.sweeper.storage=sqlite:///{disk}/sweeps.db", f"hydra.sweep.dir={disk}/sweep"], cwd=tmp_path)
        assert proc.returncode != 0
        assert "disk is full" in proc.stderr or "No space left on device" in proc.stderr
        assert "Traceback" not in proc.stderr
        con = sqlite3.connect(disk / "sweeps.db")
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        complete = con.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
        con.close()
        assert complete > 0  # what finished before the disk filled is kept


def test_unwritable_sweep_folder_is_one_clear_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc = run_cli(["tests.toy_app.app", "-m", "x=range(0,3)", f"hydra.sweeper.storage=sqlite:///{tmp_path}/s.db",
                    f"hydra.sweep.dir={blocker}/sweep"], cwd=tmp_path)
    assert proc.returncode != 0
    assert f"hydra.sweep.dir={blocker}/sweep cannot be created: Not a directory" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_data_fetch_interrupted_by_a_full_disk_leaves_no_partial_files():
    data, _ = synthetic_pickle(n_train=6000, n_valid=1000, n_test=1000)  # 5.5 MB of training images
    with small_disk("4m") as disk:
        with pytest.raises(DataUnavailableError) as info:
            ensure_mnist(disk, fetchers=[("synthetic", lambda raw: write_idx_from_pickle(data, raw, expected=None))],
                         expected={name: "0" * 32 for name in ("train-images-idx3-ubyte",)})
        message = str(info.value)
        assert "No space left on device" in message and "synthetic" in message
        leftovers = sorted(p.name for p in raw_dir(disk).iterdir())
        assert not [n for n in leftovers if n.endswith(".part")]  # no half-written file
        assert "train-images-idx3-ubyte" not in leftovers
