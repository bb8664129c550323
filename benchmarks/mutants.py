"""Does the default ``pytest`` catch these breakages? One small change to the code at a time, then the tests.

    python benchmarks/mutants.py               # every mutant, default pytest (-x: stop at the first failure)
    python benchmarks/mutants.py --list        # their names
    python benchmarks/mutants.py pareto_weak   # one of them

Each mutant is applied to a copy of the tree (``git worktree`` at HEAD, so uncommitted edits are
not seen), the default test command runs there, and the table says which were caught and by
which test. A mutant whose text is no longer found fails loudly: the code moved, update it here.
Exit status 1 when any mutant survives.
"""

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# name: (what it breaks, file, text in the code, its replacement)
MUTANTS = {
    "over_budget_launched": (
        "over-budget trials launched anyway", "sweeper/budget.py",
        "if limit is not None and value > limit:", "if False:"),
    "rejected_counted": (
        "rejected trials counted toward n_trials", "sweeper/trials.py",
        "return bool(trial.user_attrs.get(LAUNCHED_ATTR)) and trial.state in (",
        "return (bool(trial.user_attrs.get(LAUNCHED_ATTR)) or bool(trial.user_attrs.get('rejected'))) and trial.state in ("),
    "pruner_never_asked": (
        "the reporter never asks the pruner", "sweeper/api.py",
        "if last or not self._trial.should_prune():", "if True:"),
    "stale_never_failed": (
        "stale trials never failed", "sweeper/liveness.py",
        "if now - last_sign_of_life(trial) <= grace_period:", "if True:"),
    "no_masking": (
        "URL password masking disabled", "sweeper/storage.py",
        '    if url is None:\n        return "in-memory"\n    if url.startswith(JOURNAL_PREFIX):',
        '    if url is None:\n        return "in-memory"\n    if True:'),
    "last_k_plus_one": (
        "min_last_k over the last k+1 epochs", "mnist_arch/trainer.py",
        '"min_last_k_test_acc": min(accs[-last_k:]),', '"min_last_k_test_acc": min(accs[-last_k - 1:]),'),
    "pareto_weak": (
        "Pareto front keeps weakly dominated trials", "sweeper/table.py",
        "and (o[acc] > r[acc] or o[SIZE] < r[SIZE])", "and (o[acc] > r[acc] and o[SIZE] < r[SIZE])"),
    "md5_skipped": (
        "MD5 check skipped", "mnist_arch/fetch.py", "        elif md5_of(path) != md5:",
        "        elif False:"),
    "range_end_included": (
        "range end included", "sweeper/search_space.py", "n = len(range(start, stop, step))",
        "n = len(range(start, stop + step, step))"),
    "params_off_by_one": (
        "parameter count off by one", "mnist_arch/model.py",
        "return sum(p.numel() for p in model.parameters())", "return sum(p.numel() for p in model.parameters()) + 1"),
}


def apply(tree: Path, name: str) -> None:
    _, path, old, new = MUTANTS[name]
    file = tree / path
    text = file.read_text()
    if text.count(old) != 1:
        raise SystemExit(f"mutant {name}: {old!r} is found {text.count(old)} times in {path}, not once; update it here")
    file.write_text(text.replace(old, new))


def run_tests(tree: Path, extra) -> tuple:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *extra],
                          cwd=tree, capture_output=True, text=True)
    failed = re.findall(r"^FAILED (\S+)", proc.stdout, re.M) or re.findall(r"^ERROR (\S+)", proc.stdout, re.M)
    return proc.returncode, failed, time.monotonic() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--run-slow", action="store_true", help="run the slow tests too")
    args = parser.parse_args(argv)
    if args.list:
        for name, (what, path, *_) in MUTANTS.items():
            print(f"{name:22} {what} ({path})")
        return 0
    unknown = [n for n in args.names if n not in MUTANTS]
    if unknown:
        parser.error(f"no mutant {', '.join(unknown)}; there are: {', '.join(MUTANTS)}")
    survived = []
    print("| change to the code | default `pytest` | caught by | seconds |\n|---|---|---|---|", flush=True)
    for name in args.names or MUTANTS:
        with tempfile.TemporaryDirectory() as tmp:
            tree = Path(tmp) / "tree"
            subprocess.run(["git", "worktree", "add", "--detach", "-q", str(tree), "HEAD"], cwd=REPO, check=True)
            try:
                apply(tree, name)
                code, failed, seconds = run_tests(tree, ["--run-slow"] if args.run_slow else [])
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, check=True)
        caught = code != 0
        if not caught:
            survived.append(name)
        print(f"| {MUTANTS[name][0]} | {'caught' if caught else '**survives**'} | {', '.join(failed) or '-'} "
              f"| {seconds:.0f} |", flush=True)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
