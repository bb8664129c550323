"""The worker processes of ``n_jobs``: the same command again, each a worker on the same study."""

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from typing import List, Optional

WORKER_ENV = "MNIST_SWEEP_WORKER"  # set in the worker processes a sweep starts for n_jobs > 1


def worker_index() -> Optional[int]:
    """This process's worker index when a sweep started it, else None (the process the user started)."""
    value = os.environ.get(WORKER_ENV)
    return int(value) if value is not None else None


def gpu_count() -> int:
    """CUDA devices torch sees; 0 where the app has not imported torch (then it does not use it)."""
    torch = sys.modules.get("torch")
    try:
        return torch.cuda.device_count() if torch is not None else 0
    except Exception:
        return 0


def start_workers(n_jobs: int, sweep_dir: str) -> List[subprocess.Popen]:
    """n_jobs - 1 more processes running this same command; with several GPUs each gets its own."""
    procs = []
    gpus = gpu_count()
    for k in range(1, n_jobs):
        env = {**os.environ, WORKER_ENV: str(k)}
        if gpus > 1:
            env["CUDA_VISIBLE_DEVICES"] = str(k % gpus)
        cmd = [sys.executable, *sys.orig_argv[1:], f"hydra.sweep.dir={sweep_dir}"]
        procs.append(subprocess.Popen(cmd, env=env, preexec_fn=_end_with_parent))
    if gpus > 1:
        os.environ["CUDA_VISIBLE_DEVICES"] = "0"
    return procs


def _end_with_parent() -> None:
    """In a worker, before it runs: SIGTERM when the process that started it dies (Linux), so none is orphaned.

    A worker ignores SIGINT: Ctrl-C reaches the whole process group, and a worker still starting up
    would die of it with a traceback, or one mid-claim race the process the user started. That
    process alone takes Ctrl-C and stops each worker with SIGTERM (``stop_workers``), which a worker
    records like an interrupt once it runs its sweep, and which ends it quietly before that.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def stop_workers(procs: List[subprocess.Popen], timeout: float = 60.0, every: float = 1.0) -> List[int]:
    """Ask the workers to stop (SIGTERM: each records its running trial as interrupted) and wait for them.

    The signal is sent again every ``every`` seconds to a worker still running: one that arrived
    while the worker could not take it yet was seen lost (the worker then trained on until it was
    killed). A worker already recording its interrupt ignores the repeats. Past ``timeout``: SIGKILL.
    """
    deadline = time.monotonic() + timeout
    while True:
        alive = [proc for proc in procs if proc.poll() is None]
        if not alive or time.monotonic() >= deadline:
            break
        for proc in alive:
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            alive[0].wait(timeout=min(every, max(0.0, deadline - time.monotonic())))
    codes = []
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        codes.append(proc.wait())
    return codes


def job_threads(threads_per_job: Optional[int], n_jobs: int) -> int:
    """CPU threads for one job: as configured, else an equal share of the cores."""
    if threads_per_job is not None:
        return threads_per_job
    return max(1, (os.cpu_count() or 1) // n_jobs)


def job_overrides(overrides: List[str], threads_key: Optional[str], threads_per_job: Optional[int], n_jobs: int) -> List[str]:
    """A trial's overrides plus, where the app opted in (``threads_key``), its CPU thread share."""
    job = list(overrides)
    if threads_key and not any(o.split("=", 1)[0].lstrip("+~") == threads_key for o in overrides):
        job.append(f"++{threads_key}={job_threads(threads_per_job, n_jobs)}")
    return job
