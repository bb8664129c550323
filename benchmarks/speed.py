"""Training throughput on this machine: the usual tutorial loop, mnist_arch's trainer, a sweep.

    python benchmarks/speed.py                 # CPU or GPU, whatever trainer.device=auto picks
    python benchmarks/speed.py --quick         # fewer steps, smaller sweeps (a smoke check)

Measures, in one run on one machine, training images per second of
  (a) the reference loop most MNIST tutorials use: torchvision's MNIST dataset with per-sample
      transforms (RandomAffine of the same strength as ours, ToTensor, Normalize), a DataLoader
      with worker processes, batch 128, the same model (model=s4) and optimizer;
  (b) mnist_arch's trainer (data on the device, index-slice batches, batched augmentation), with
      all threads and with one thread;
  (c) a sweep with n_jobs=2 trials in parallel (the real command line), images trained / wall time;
  (b) and (c) again with trainer.channels_last=true (NHWC activations);
then the ratios b/a and c/a, and each epoch's share spent evaluating the 10k test images. Last,
a short sweep with the pruner and the budget check on, against the same trials with both off.
Prints a Markdown report; nothing here is asserted.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mnist_arch.config import compose_config  # noqa: E402
from mnist_arch.data import MEAN, STD  # noqa: E402
from mnist_arch.fetch import ensure_mnist  # noqa: E402
from mnist_arch.model import build_model  # noqa: E402
from mnist_arch.trainer import fit, resolve_device  # noqa: E402
from sweeper.storage import open_storage  # noqa: E402


def reference_loop(steps: int, warmup: int, workers: int, device: torch.device) -> float:
    """Images/s of the tutorial pipeline: per-sample PIL transforms in DataLoader workers."""
    cfg = compose_config([])
    aug = cfg.data.augment
    transform = transforms.Compose([
        transforms.RandomAffine(aug.rotation, translate=(aug.translate, aug.translate), scale=(1 - aug.scale, 1 + aug.scale)),
        transforms.ToTensor(),
        transforms.Normalize((MEAN,), (STD,)),
    ])
    dataset = datasets.MNIST(str(ensure_mnist()), train=True, transform=transform)
    loader = DataLoader(dataset, batch_size=128, shuffle=True, num_workers=workers, persistent_workers=workers > 0,
                        pin_memory=device.type == "cuda")
    torch.manual_seed(0)
    model = build_model(cfg.model).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    model.train()
    seen, started = 0, None
    for i, (x, y) in enumerate(loader):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            started, seen = time.perf_counter(), 0
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += len(x)
        if i + 1 == warmup + steps:
            break
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - started)


def project_trainer(n_images: int, threads: int, channels_last: bool = False) -> dict:
    """Images/s of mnist_arch's trainer for one epoch over n_images, and its evaluation share."""
    cfg = compose_config([f"data.train_subset={n_images}", "trainer.epochs=1", f"trainer.threads={threads}",
                          "trainer.progress=false", f"trainer.channels_last={channels_last}"])
    result = fit(cfg)
    (record,) = result["history"]
    train_seconds = record["seconds"] - record["eval_seconds"]
    return {"images_per_s": n_images / train_seconds, "eval_share": record["eval_seconds"] / record["seconds"],
            "epoch_seconds": record["seconds"], "eval_seconds": record["eval_seconds"]}


def run_sweep(workdir: Path, study: str, args: list) -> optuna.Study:
    url = f"sqlite:///{workdir}/bench.db"
    cmd = [sys.executable, "-m", "mnist_arch.train", "-m", "hydra/sweeper=optuna_budget",
           f"hydra.sweeper.storage={url}", f"hydra.sweeper.study_name={study}", f"hydra.sweep.dir={workdir}/{study}", *args]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    if proc.returncode != 0:
        raise RuntimeError(f"sweep {study} failed: {proc.stderr[-2000:]}")
    return optuna.load_study(study_name=study, storage=open_storage(url))


def wall(trials) -> float:
    return (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()


def sweep_throughput(workdir: Path, n_images: int, trials: int, channels_last: bool = False) -> dict:
    """Training images / wall time of a real n_jobs=2 sweep, end to end (process start, data, evaluation).

    Evaluation runs on 2,000 test images so that, as in (a) and (b), the figure is about training.
    """
    study = run_sweep(workdir, f"throughput-cl{int(channels_last)}", [
        f"trainer.channels_last={channels_last}", f"data.train_subset={n_images}", "data.test_subset=2000", "trainer.epochs=1", "hydra.sweeper.n_jobs=2",
        f"hydra.sweeper.n_trials={trials}", "hydra/sweeper/pruner=none", "seed=range(0,100000)",
    ])
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    return {"images_per_s": len(done) * n_images / wall(done), "trials": len(done), "wall_s": wall(done)}


def pruning_and_budget(workdir: Path, n: int, epochs: int, n_images: int) -> dict:
    """The same n proposals (a seeded random sampler ignores history) with pruner and budget off, then on."""
    space = ["model/widths=choice(tiny,s4,wide)", "model.widths.multiplier=choice(1.0,2.0)",
             "optim.lr=tag(log,interval(0.00001,0.3))", f"data.train_subset={n_images}", f"trainer.epochs={epochs}",
             "data.test_subset=2000", "hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=7"]
    off = run_sweep(workdir, "off", [*space, "hydra/sweeper/pruner=none", "budget.max_params=null", f"hydra.sweeper.n_trials={n}"])
    over = sum(t.user_attrs["n_params"] > 20000 for t in off.trials)
    on = run_sweep(workdir, "on", [*space, "hydra.sweeper.pruner.n_startup_trials=2", "hydra.sweeper.pruner.n_warmup_steps=0",
                                   f"hydra.sweeper.n_trials={n - over}"])
    assert [t.params for t in on.trials] == [t.params for t in off.trials], "the two sweeps proposed different trials"
    epochs_of = lambda s: sum(t.user_attrs.get("epochs_run", 0) for t in s.trials)
    kinds = lambda s: {k: sum(1 for t in s.trials if (("rejected" if t.user_attrs.get("rejected") else t.state.name.lower()) == k))
                       for k in ("complete", "pruned", "rejected")}
    return {"trials": n, "off": {"wall_s": wall(off.trials), "epochs": epochs_of(off), **kinds(off)},
            "on": {"wall_s": wall(on.trials), "epochs": epochs_of(on), **kinds(on)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    steps = 60 if args.quick else 200
    device = resolve_device("auto")
    cores = os.cpu_count()
    report = {"machine": f"{platform.processor() or platform.machine()}, {cores} cores, "
                         f"{torch.cuda.get_device_name(0) if device.type == 'cuda' else 'no GPU'}",
              "torch": torch.__version__, "device": str(device)}
    report["a_reference"] = reference_loop(steps, warmup=10, workers=min(4, cores), device=device)
    report["b_trainer_all_threads"] = project_trainer(steps * 128, threads=cores)
    report["b_trainer_one_thread"] = project_trainer(steps * 128, threads=1)
    report["b_trainer_all_threads_channels_last"] = project_trainer(steps * 128, threads=cores, channels_last=True)
    report["b_trainer_one_thread_channels_last"] = project_trainer(steps * 128, threads=1, channels_last=True)
    report["eval_share_full_epoch"] = project_trainer(60000, threads=cores)
    with tempfile.TemporaryDirectory() as tmp:
        report["c_sweep"] = sweep_throughput(Path(tmp), steps * 128 if args.quick else 60000, trials=4)
        report["c_sweep_channels_last"] = sweep_throughput(Path(tmp), steps * 128 if args.quick else 60000, trials=4,
                                                           channels_last=True)
        report["short_sweep"] = pruning_and_budget(Path(tmp), n=6 if args.quick else 10, epochs=3, n_images=3000)
    a = report["a_reference"]
    b = report["b_trainer_all_threads"]["images_per_s"]
    c = report["c_sweep"]["images_per_s"]
    print(json.dumps(report, indent=2, default=str))
    print()
    print("| measure | images/s | vs reference |\n| --- | ---: | ---: |")
    print(f"| (a) reference loop (DataLoader, {min(4, cores)} workers, per-sample transforms) | {a:,.0f} | 1.00 |")
    print(f"| (b) mnist_arch trainer, {cores} threads | {b:,.0f} | {b / a:.2f} |")
    b1 = report["b_trainer_one_thread"]["images_per_s"]
    print(f"| (b) mnist_arch trainer, 1 thread | {b1:,.0f} | {b1 / a:.2f} |")
    print(f"| (c) sweep, n_jobs=2, 1 thread each, end to end ({report['c_sweep']['trials']} trials) | {c:,.0f} | {c / a:.2f} |")
    for key, text in (("b_trainer_all_threads_channels_last", f"(b) trainer, {cores} threads, channels_last"),
                      ("b_trainer_one_thread_channels_last", "(b) trainer, 1 thread, channels_last"),
                      ("c_sweep_channels_last", "(c) sweep, n_jobs=2, channels_last")):
        v = report[key]["images_per_s"]
        print(f"| {text} | {v:,.0f} | {v / a:.2f} |")
    e = report["eval_share_full_epoch"]
    print(f"\nevaluation of 10k test images: {e['eval_seconds']:.2f} s of a {e['epoch_seconds']:.1f} s epoch "
          f"({100 * e['eval_share']:.1f}%)")
    s = report["short_sweep"]
    print(f"\nshort sweep, the same {s['trials']} proposals: off {s['off']} vs on {s['on']}")


if __name__ == "__main__":
    main()
