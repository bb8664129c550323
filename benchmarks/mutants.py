"""Does the default ``pytest`` catch these breakages? One small change to the code at a time, then the tests.

    python benchmarks/mutants.py               # every mutant, default pytest (-x: stop at the first failure)
    python benchmarks/mutants.py --list        # their names
    python benchmarks/mutants.py pareto_weak   # one of them
    python benchmarks/mutants.py --quick       # only the test files named with each mutant: a quick check
                                               # (a failure there fails the default run too; a survivor
                                               # there is only a suspect: run it without --quick)

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

# name: (what it breaks, file, text in the code, its replacement[, test files that should catch it])
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
        "if alive or (alive is None and silent <= grace_period):", "if True:"),
    "no_masking": (
        "URL password masking disabled", "sweeper/storage.py",
        '    if url is None:\n        return "in-memory"\n    if url.startswith(JOURNAL_PREFIX):',
        '    if url is None:\n        return "in-memory"\n    if True:'),
    "last_k_plus_one": (
        "min_last_k over the last k+1 epochs", "mnist_arch/trainer.py",
        '"min_last_k_test_acc": min(accs[-last_k:]),', '"min_last_k_test_acc": min(accs[-last_k - 1:]),'),
    "pareto_weak": (
        "Pareto front keeps weakly dominated trials", "sweeper/table.py",
        "return all(a >= b for a, b in pairs) and any(a > b for a, b in pairs)",
        "return all(a >= b for a, b in pairs) and all(a > b for a, b in pairs)"),
    "md5_skipped": (
        "MD5 check skipped", "mnist_arch/fetch.py", "        elif md5_of(path) != md5:",
        "        elif False:"),
    "range_end_included": (
        "range end included", "sweeper/search_space.py", "n = len(range(start, stop, step))",
        "n = len(range(start, stop + step, step))"),
    "params_off_by_one": (
        "parameter count off by one", "mnist_arch/model.py",
        "return sum(p.numel() for p in model.parameters())", "return sum(p.numel() for p in model.parameters()) + 1"),
    # The second mutation check: bugs a user would meet that the first fast suite let through.
    "race_against_worst": (
        "racing compares against the worst completed trial", "sweeper/trial_run.py",
        'return max(values) if direction == "maximize" else min(values)',
        'return min(values) if direction == "maximize" else max(values)', ["tests/test_repeats.py"]),
    "nan_later_objective": (
        "NaN/inf in a later objective told as COMPLETE", "sweeper/outcome.py",
        "if not all(math.isfinite(v) for v in values):", "if not math.isfinite(values[0]):",
        ["tests/test_sweeper_units.py"]),
    "export_trial_zero": (
        "--export --trial 0 exports the best trial", "sweeper/export.py",
        "    if number is not None:\n        match", "    if number:\n        match", ["tests/test_results.py"]),
    "eval_in_train_mode": (
        "evaluation without model.eval()", "mnist_arch/trainer.py",
        "    model.eval()\n    loss = torch.zeros", "    loss = torch.zeros", ["tests/test_train.py"]),
    "step_per_batch": (
        "schedule=step decays every step_size batches", "mnist_arch/optim.py",
        "period = cfg.step_size * steps_per_epoch", "period = cfg.step_size", ["tests/test_train.py"]),
    "sigterm_unhandled": (
        "SIGTERM no longer handled", "sweeper/interrupts.py",
        "        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):\n            if signum",
        "        for signum in (signal.SIGINT, signal.SIGHUP):\n            if signum",
        ["tests/test_interrupts.py"]),
    "tracker_keeps_secrets": (
        "the MLflow tracker's warnings show a password from the environment", "mnist_arch/tracking.py",
        "super().__init__(secrets=passwords_in(self.uri))", "super().__init__()", ["tests/test_tracking.py"]),
    # Their siblings: promises of README's that no fast test watched.
    "interrupt_mid_database_call": (
        "an interrupt raised at once anywhere, mid database call too", "sweeper/interrupts.py",
        "        if _acts_at_once():\n            raise _exception(signum)", "        raise _exception(signum)",
        ["tests/test_interrupts.py --run-slow -k random_moments"]),
    "liveness_ignores_process": (
        "a dead local worker's trial waits for the grace period", "sweeper/liveness.py",
        "        if alive or (alive is None and silent <= grace_period):", "        if silent <= grace_period:",
        ["tests/test_sweeper_units.py"]),
    "ema_warmup_ignored": (
        "trainer.ema_warmup=true ignored", "mnist_arch/trainer.py",
        "    if not warmup:\n", "    if True:\n", ["tests/test_training_end.py"]),
    "bn_recompute_with_dropout": (
        "BatchNorm statistics recomputed with dropout on", "mnist_arch/trainer.py",
        "    model.eval()\n    saved = [m.momentum", "    model.train()\n    saved = [m.momentum",
        ["tests/test_training_end.py"]),
    "label_smoothing_ignored": (
        "trainer.label_smoothing ignored", "mnist_arch/trainer.py",
        "label_smoothing=cfg.trainer.label_smoothing)", "label_smoothing=0.0)", ["tests/test_training_end.py"]),
    "anneal_ignored": (
        "schedule.anneal_epochs ignored", "mnist_arch/optim.py",
        "return min(1.0, max(0, self.total - step) / self.anneal)", "return 1.0", ["tests/test_training_end.py"]),
    "rank_ignores_direction": (
        "results table ranks a minimize study worst first", "sweeper/table.py",
        "sign = -1 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1", "sign = -1",
        ["tests/test_results.py"]),
    "val_inside_train": (
        "validation images also trained on", "mnist_arch/data.py",
        "train_idx, val_idx = order[: n_train - cfg.val_size].sort().values",
        "train_idx, val_idx = order[:n_train].sort().values", ["tests/test_data.py"]),
    "divergence_not_stopped": (
        "a diverged run (non-finite loss) trains on", "mnist_arch/trainer.py",
        'if not math.isfinite(train["loss"]):', "if False:", ["tests/test_train.py"]),
    "best_epoch_latest": (
        "best epoch is the latest among equals", "mnist_arch/trainer.py",
        "key=lambda i: (accs[i], -i))", "key=lambda i: (accs[i], i))", ["tests/test_train.py"]),
    "threads_not_shared": (
        "parallel trials get no thread share", "sweeper/workers.py",
        '        job.append(f"++{threads_key}={job_threads(threads_per_job, n_jobs)}")', "        pass",
        ["tests/test_any_app.py", "tests/test_sweeper_units.py"]),
    "callback_error_stops_sweep": (
        "a failing study callback stops the sweep", "sweeper/callbacks.py",
        "        except Exception as exc:\n            log.warning(", "        except ZeroDivisionError as exc:\n            log.warning(",
        ["tests/test_callbacks.py"]),
    "log_scale_dropped": (
        "tag(log, interval(...)) sampled on a linear scale", "sweeper/search_space.py",
        "return FloatDistribution(float(low), float(high), log=log)",
        "return FloatDistribution(float(low), float(high), log=False)", ["tests/test_search_space.py"]),
    "shuffle_ignores_seed": (
        "every seed sees the same batches and augmentations", "mnist_arch/trainer.py",
        "generator = torch.Generator(device=device).manual_seed(cfg.seed)",
        "generator = torch.Generator(device=device).manual_seed(0)", ["tests/test_train.py"]),
    # The any-app round: what a user bringing their own Hydra app now relies on.
    "traceback_not_written": (
        "a failing job's traceback not written to error.log", "sweeper/tracebacks.py",
        "            (folder / ERROR_LOG).write_text(text)\n", "            pass\n", ["tests/test_own_app.py"]),
    "group_options_unchecked": (
        "a choice of a missing config-group option runs anyway", "sweeper/optuna_sweeper.py",
        "            check_group_choices(distributions, self._group_options)\n", "", ["tests/test_own_app.py"]),
    "misspelt_key_not_named": (
        "a misspelt hydra.sweeper key gets Hydra's four lines", "sweeper/errors.py",
        "        return no_such_key(full_key, [f.name for f in dataclasses.fields(schema)])", "        return None",
        ["tests/test_own_app.py"]),
    "driver_hint_generic": (
        "every missing driver told to install the PostgreSQL one", "sweeper/storage.py",
        "    hint = DRIVERS.get(scheme) or", "    hint = DRIVERS['postgresql'] or", ["tests/test_own_app.py"]),
    "objectives_one_column": (
        "a multi-objective study's values in one list column", "sweeper/table.py",
        "    return dict(zip(columns, maximize))", "    return {'objective': maximize[0]}",
        ["tests/test_own_app.py", "tests/test_results.py"]),
    "full_trial_needs_steps": (
        "the full-trial time unknown for an app that never reports steps", "sweeper/table.py",
        "    full = [_seconds(t) for t in complete if (steps_run(t) or 0) == full_steps]",
        "    full = [_seconds(t) for t in complete if full_steps and steps_run(t) == full_steps]",
        ["tests/test_own_app.py", "tests/test_results.py"]),
    # Found by using the tools on the small-end study's real database.
    "raced_shows_last_step": (
        "a raced trial shows Optuna's last per-step report as its objective", "sweeper/table.py",
        '    if trial_kind(t) == "raced":\n        so_far', '    if False:\n        so_far', ["tests/test_results.py"]),
    "pareto_on_best_epoch": (
        "--pareto trades the best epoch, not the accuracy the study optimizes", "sweeper/results.py",
        "    acc = args.acc or default_acc(study)", '    acc = args.acc or "best_acc"', ["tests/test_results.py"]),
    "rerun_not_named": (
        "a failed trial does not name the trial that runs its point again", "sweeper/table.py",
        "        if t.number in reruns:", "        if False:", ["tests/test_repeats.py", "tests/test_sweeper_units.py"]),
    "python_m_module_lost": (
        "a sweep run by python -m records no module, so its export cannot compose", "sweeper/export.py",
        '        return {"module": spec.name, "script": None}', '        return {"module": None, "script": None}',
        ["tests/test_results.py"]),
    # Found by the small-end search's end and by timing the slow tests.
    "same_start_not_told": (
        "a new study that repeats another study's first points is not told", "sweeper/samplers.py",
        "            return other.study_name", "            return None", ["tests/test_sweeper_config.py"]),
    "job_waits_fixed_300s": (
        "a job waits 300 s for an unreachable database whatever storage_patience says", "sweeper/api.py",
        "    return SweepTrial(study, int(hydra_cfg.job.num), patience, where)",
        "    return SweepTrial(study, int(hydra_cfg.job.num), 300, where)",
        ["tests/test_sweeper_units.py"]),
    "job_prunes_with_default": (
        "a job in its own process prunes with Optuna's default pruner", "sweeper/api.py",
        "        made = make_pruner(pruner, repeated) if pruner is not None else None", "        made = None",
        ["tests/test_sweeper_units.py"]),
    "median_of_survivors": (
        "under repeats the median is taken over the complete trials only", "sweeper/samplers.py",
        "    if repeated and isinstance(pruner, optuna.pruners.PercentilePruner):", "    if False:",
        ["tests/test_repeats.py", "tests/test_sweeper_units.py"]),
    "interrupt_as_failure": (
        'a job stopped by SIGTERM or SIGHUP written up as a failure', 'sweeper/tracebacks.py',
        '(optuna.TrialPruned, KeyboardInterrupt, SystemExit, Interrupted)',
        '(optuna.TrialPruned, KeyboardInterrupt, SystemExit)', ["tests/test_boundaries.py"]),
    "grace_equal_beat": (
        'grace_period equal to heartbeat_interval accepted', 'sweeper/checks.py',
        'if values["grace_period"] <= values["heartbeat_interval"]',
        'if values["grace_period"] < values["heartbeat_interval"]', ["tests/test_boundaries.py"]),
    "pool_without_running": (
        'the repeats median pool leaves out trials whose later repeats run', 'sweeper/samplers.py',
        'wider = (*states, TrialState.PRUNED, TrialState.RUNNING)',
        'wider = (*states, TrialState.PRUNED)', ["tests/test_boundaries.py"]),
    "nsgaiii_population_50": (
        "nsgaiii's population is not the documented 20", 'sweeper/config.py',
        "    population_size: int = 20  # small: trials are expensive (Optuna's default: 50)\n    mutation: Optional[Any] = None  # e.g.",
        "    population_size: int = 50  # small: trials are expensive (Optuna's default: 50)\n    mutation: Optional[Any] = None  # e.g.", ["tests/test_boundaries.py"]),
    "job_default_patience": (
        'a job in its own process waits with the default patience', 'sweeper/api.py',
        'patience = sweeper_cfg.get("storage_patience", STORAGE_PATIENCE_S)',
        'patience = STORAGE_PATIENCE_S', ["tests/test_boundaries.py"]),
    "same_seed_silent": (
        "no warning for a study repeating another's sampler seed", 'sweeper/optuna_sweeper.py',
        '                if twin is not None:\n',
        '                if False:\n', ["tests/test_boundaries.py"]),
    "pareto_minimize_as_max": (
        '--pareto treats a minimize objective as maximize', 'sweeper/results.py',
        'rows = pareto_front(rows, axes=pareto_axes(objectives, budget, carried, rows))',
        'rows = pareto_front(rows, axes={k: True for k in pareto_axes(objectives, budget, carried, rows)})', ["tests/test_boundaries.py"]),
    "export_top_level_check": (
        '--export keeps a file whose nested values differ', 'sweeper/export.py',
        '        if again != wanted:',
        '        if again.keys() != wanted.keys():', ["tests/test_boundaries.py"]),
    "constraint_not_told": (
        "the budget excess never handed to Optuna's constraints", 'sweeper/budget.py',
        '                trial.set_constraint(BUDGET_CONSTRAINT, excess)',
        '                pass', ["tests/test_boundaries.py"]),
    "median_low": (
        'an even number of repeats: median takes the lower middle', 'sweeper/repeats.py',
        '"median": statistics.median,',
        '"median": statistics.median_low,', ["tests/test_boundaries.py"]),
    "no_epochs_last": (
        'a report without epochs is never pruned', 'sweeper/reporter.py',
        'last = epoch >= record.get("epochs", float("inf"))',
        'last = epoch >= record.get("epochs", 0)', ["tests/test_boundaries.py"]),
    "target_strict": (
        'an epoch exactly at the target does not count', 'mnist_arch/trainer.py',
        'if h["test_acc"] >= target_acc), None)',
        'if h["test_acc"] > target_acc), None)', ["tests/test_boundaries.py"]),
    "anneal_all_refused": (
        'anneal_epochs equal to trainer.epochs refused', 'mnist_arch/optim.py',
        'if not 0 <= cfg.anneal_epochs <= epochs:',
        'if not 0 <= cfg.anneal_epochs < epochs:', ["tests/test_boundaries.py"]),
}


def apply(tree: Path, name: str) -> None:
    _, path, old, new = MUTANTS[name][:4]
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
    parser.add_argument("--quick", action="store_true", help="run only the test files named with each mutant")
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
                files = [w for f in MUTANTS[name][4] for w in f.split()] if args.quick and len(MUTANTS[name]) > 4 else []
                code, failed, seconds = run_tests(tree, (["--run-slow"] if args.run_slow else []) + files)
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
