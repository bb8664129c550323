"""What a stop costs: a sweep stopped by a signal after epoch k, resumed by the same command, against the same
trial run whole.

    python benchmarks/resume.py                       # the smoke search, 6 epochs, 1 trial, Ctrl-C after epoch 4
    python benchmarks/resume.py --epochs 20 --stop-after 10 --signal SIGTERM -- +experiment=small_end_t7 \
        'optim.lr=choice(0.0621259464935061)' hydra.sweeper.params=null data.val_size=0

Runs ``mnist-train -m`` three times in a fresh folder (``--out``, default a temporary one): study ``whole``
uninterrupted; study ``stopped`` until the trial's checkpoint reaches epoch ``--stop-after``, then the
signal (SIGINT to the process group, as Ctrl-C; SIGTERM to the sweep, as a scheduler); the same command
again. Prints a Markdown table: epochs trained in all, epochs trained twice, wall seconds, the final
objective and whether every epoch's test accuracy equals the whole run's (compared with ==).
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from sweeper.storage import StorageError, open_storage_readonly

optuna.logging.set_verbosity(optuna.logging.WARNING)


def trials(db: Path, study: str):
    try:
        return optuna.load_study(study_name=study, storage=open_storage_readonly(f"sqlite:///{db}")).get_trials()
    except (StorageError, KeyError):
        return []


def command(out: Path, study: str, epochs: int, overrides) -> list:
    return [sys.executable, "-m", "mnist_arch.train", "-m", *overrides, f"trainer.epochs={epochs}",
            "hydra.sweeper.n_trials=1", "hydra/sweeper/pruner=none", f"hydra.sweeper.storage=sqlite:///{out}/sweeps.db",
            f"hydra.sweeper.study_name={study}", f"hydra.sweep.dir={out}/{study}", "trainer.progress=false"]


def curve(out: Path, study: str, number: int) -> list:
    history = json.loads((out / study / str(number) / "metrics.json").read_text())["history"]
    return [h["test_acc"] for h in history]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--stop-after", type=int, default=4, help="signal once the checkpoint of this epoch is recorded")
    parser.add_argument("--signal", default="SIGINT", choices=["SIGINT", "SIGTERM"])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("overrides", nargs="*", help="mnist-train overrides, after --")
    args = parser.parse_args()
    overrides = args.overrides or ["+search=smoke", "data.train_subset=3000", "model/widths=choice(s4)",
                                   "model.widths.multiplier=choice(1.0)", "model/norm=choice(bn_relu)"]
    out = args.out or Path(tempfile.mkdtemp(prefix="resume_"))
    out.mkdir(parents=True, exist_ok=True)
    db = out / "sweeps.db"

    started = time.perf_counter()
    subprocess.run(command(out, "whole", args.epochs, overrides), check=True, cwd=out, capture_output=True)
    whole_s = time.perf_counter() - started

    started = time.perf_counter()
    proc = subprocess.Popen(command(out, "stopped", args.epochs, overrides), cwd=out, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not any(t.state == TrialState.RUNNING and (t.user_attrs.get("checkpoint") or {}).get("step", 0) >= args.stop_after
                  for t in trials(db, "stopped")):
        if proc.poll() is not None:
            sys.exit(f"the sweep ended before epoch {args.stop_after}'s checkpoint:\n{proc.stderr.read()[-2000:]}")
        time.sleep(0.2)
    if args.signal == "SIGINT":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate()
    first_s = time.perf_counter() - started
    said = [line for line in err.splitlines() if line.startswith("interrupted")]
    started = time.perf_counter()
    again = subprocess.run(command(out, "stopped", args.epochs, overrides), cwd=out, capture_output=True, text=True)
    second_s = time.perf_counter() - started
    if again.returncode:
        sys.exit(again.stderr[-2000:])

    (whole,) = trials(db, "whole")
    stopped, resumed = trials(db, "stopped")
    saved = stopped.user_attrs["checkpoint"]["step"]
    reported = len(stopped.user_attrs.get("curve") or [])
    log = (out / "stopped" / str(resumed.number) / "train.log").read_text()
    trained_after = len(re.findall(r"- epoch +\d+/\d+ ", log))
    same = curve(out, "stopped", resumed.number) == curve(out, "whole", whole.number)
    print(f"{args.signal} after the checkpoint of epoch {saved} of {args.epochs} (exit {proc.returncode}; "
          f"{said[0] if said else 'no interrupted line'})\n")
    print("| run | epochs trained | epochs trained twice | wall s | objective | every epoch == whole run |")
    print("| --- | ---: | ---: | ---: | --- | --- |")
    print(f"| whole | {args.epochs} | 0 | {whole_s:.0f} | {whole.value} | |")
    print(f"| stopped, then the same command | {reported} + {trained_after} | {reported + trained_after - args.epochs} | "
          f"{first_s:.0f} + {second_s:.0f} | {resumed.value} | {'yes' if same and resumed.value == whole.value else 'NO'} |")
    print(f"\nfolder: {out}")


if __name__ == "__main__":
    main()
