"""Judge mutmut's mutants of one module by the test files nearest it, two at a time, and record the verdicts.

    python benchmarks/mutant_screen.py generate
    python benchmarks/mutant_screen.py run --tests "tests/test_storage.py tests/test_boundaries.py" "sweeper.storage*"
    python benchmarks/mutant_screen.py run --survivors --tests "... tests/test_own_app.py" "sweeper.storage*"
    python benchmarks/mutmut_table.py --survivors "sweeper.storage*"

``mutmut run`` judges each mutant by every test its stats say reach the function, after collecting those
stats over the whole suite: on 2 cores a survivor of a large module costs minutes. This tool keeps mutmut's
mutants and its ``.meta`` files but lets the user name the test files (in-process ones first; every file
named is part of the fast default run, so a kill here is a kill by that run), stops each run at the first
failing test (``-x``), and runs ``--jobs`` mutants at once, each in its own copy of ``mutants/``. Survivors
can then be judged again by more files (``--survivors``), or by tests written since (``--tests-from``, the
tests folder to copy in; the default is the one mutmut copied when it generated the mutants).

``generate`` is mutmut 3.8's generation step alone (seconds): the project's ``[tool.mutmut]`` is read from
the current folder, as ``mutmut run`` does. Run both from a worktree at a fixed commit, never from the tree
being edited. Verdicts are mutmut's exit codes (1 killed, 0 survived, 5 no tests, 36 timeout), written to the
``.meta`` file after each mutant, so ``mutmut show``, ``mutmut results``, ``benchmarks/mutmut_table.py`` and
a later ``mutmut run`` (which goes on with the mutants not checked) read them, and a stopped run loses
nothing. Before any mutant, the files must pass on the code as it is and fail when every mutated function
raises (mutmut's own check that the tests import the mutated copy, not an installed one).

The tests run fastest first: the clean run times each one, and the later runs order them by those times
(this file is loaded as a pytest plugin for that), so a mutant is killed by the cheapest test that can
kill it, not by whichever comes first in its file. The clean run is repeated in that order, so a test
that depends on the order of the file is met before any mutant is judged.
"""

import argparse
import fnmatch
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

KILLED, SURVIVED, NO_TESTS, TIMEOUT = 1, 0, 5, 36  # mutmut 3.8's exit codes (mutmut/stats.py)
RECHECK = (SURVIVED, NO_TESTS, TIMEOUT)  # what --survivors judges again
PYTEST = ("-x", "-q", "-n", "0", "-p", "no:cacheprovider", "-p", Path(__file__).stem)
FORCED_FAIL = "fail"  # mutmut's trampoline raises in every mutated function under this name
ORDER_ENV = "MUTANT_SCREEN_ORDER"  # a JSON file of {test id: seconds} the tests are run in (fastest first)
TIMED = ("--durations=0", "--durations-min=0")  # every test's setup, call and teardown seconds, in the output


def pytest_collection_modifyitems(session, config, items) -> None:
    """As a pytest plugin: the tests in the order of ORDER_ENV's seconds, fastest first; tests it does not
    time last, in their own order."""
    order = os.environ.get(ORDER_ENV)
    if order and Path(order).is_file():  # not yet while the clean run times them
        seconds = json.loads(Path(order).read_text())
        items.sort(key=lambda item: seconds.get(item.nodeid, float("inf")))


def durations(output: str) -> Dict[str, float]:
    """{test id: seconds} from pytest's ``--durations=0`` table: its setup, call and teardown summed."""
    seconds: Dict[str, float] = {}
    for line in output.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[0].endswith("s") and parts[1] in ("setup", "call", "teardown"):
            try:
                taken = float(parts[0][:-1])
            except ValueError:
                continue
            seconds[parts[2]] = seconds.get(parts[2], 0.0) + taken
    return seconds


def generate() -> None:
    """mutmut's generation step, in the current folder: ``mutants/`` with every mutant, none judged."""
    import mutmut.__main__ as mutmut  # the [test] extra; its generation is not a command of its own

    mutmut.set_mutant_under_test("mutant_generation")
    os.makedirs("mutants", exist_ok=True)
    mutmut.copy_src_dir()
    mutmut.copy_also_copy_files()
    mutmut.setup_source_paths()
    mutmut.store_lines_covered_by_tests()
    stats = mutmut.create_mutants(min(2, os.cpu_count() or 1))
    print(f"mutants/: {stats.mutated} files mutated, {stats.ignored} not mutated, {stats.unmodified} unchanged since")


def metas(root: Path) -> List[Path]:
    return sorted(root.rglob("*.py.meta"))


def select(root: Path, patterns: Sequence[str], again: bool) -> List[Tuple[Path, str]]:
    """(meta file, mutant name) of each mutant matching a pattern: not yet judged, or (``again``) survivors."""
    chosen = []
    for meta in metas(root):
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            if any(fnmatch.fnmatch(name, p) for p in patterns) and (code in RECHECK if again else code is None):
                chosen.append((meta, name))
    return chosen


def record(meta: Path, verdicts: Dict[str, Tuple[Optional[int], float]]) -> None:
    """Write verdicts (name: exit code, seconds) into a ``.meta`` file, whole or not at all."""
    data = json.loads(meta.read_text())
    for name, (code, seconds) in verdicts.items():
        data["exit_code_by_key"][name] = code
        data.setdefault("durations_by_key", {})[name] = round(seconds, 3)
    tmp = meta.with_name(meta.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=4))
    os.replace(tmp, meta)


def workspace(root: Path, k: int, tests_from: Optional[Path]) -> Path:
    """The k-th copy of ``mutants/``, with ``tests_from``'s tests when given; a new folder for each run, so
    runs of two modules at once (or a stopped run's leftovers) never share one."""
    copy = Path(tempfile.mkdtemp(prefix=f"{root.name}.screen{k}.", dir=root.parent)) / root.name
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("*.meta", "*.spans", "__pycache__"))
    if tests_from is not None:
        shutil.rmtree(copy / "tests", ignore_errors=True)
        shutil.copytree(tests_from, copy / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def pytest(where: Path, tests: Sequence[str], mutant: str, timeout: Optional[float],
           running: Optional[set] = None) -> Tuple[Optional[int], str]:
    """Run the tests with one mutant active: (pytest's exit code, or None past the timeout; its output).

    The tests run in a session of their own, so a timeout ends their subprocesses too; ``running`` holds
    the processes under way, for an interrupt to end them."""
    env = {**os.environ, "MUTANT_UNDER_TEST": mutant}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(Path(__file__).parent)]))  # the plugin
    proc = subprocess.Popen([sys.executable, "-m", "pytest", *PYTEST, *tests], cwd=where, start_new_session=True,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if running is not None:
        running.add(proc)
    try:
        output, _ = proc.communicate(timeout=timeout)
        return proc.returncode, output
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        return None, output + f"\npast {timeout:.0f} s"
    finally:
        if running is not None:
            running.discard(proc)


def last_line(output: str) -> str:
    lines = output.strip().splitlines()
    return lines[-1] if lines else ""


def verdict(code: Optional[int], output: str) -> Optional[int]:
    """The exit code to record for pytest's, or None for a run that was interrupted (left not judged)."""
    if code is None:
        return TIMEOUT
    if code == 2 and "during collection" not in output:  # interrupted (a mutant breaking an import is a kill)
        return None
    return KILLED if code in (1, 2, 3) else code


def check_setup(where: Path, tests: Sequence[str], running: Optional[set] = None) -> float:
    """Seconds the tests take on the code as it is, run fastest first (their times are written to the file
    ORDER_ENV names); exits if they fail there, in either order, or pass with every mutant raising."""
    start = time.monotonic()
    code, output = pytest(where, [*TIMED, *tests], "", None, running)
    seconds = time.monotonic() - start
    if code == 0:
        Path(os.environ[ORDER_ENV]).write_text(json.dumps(durations(output)))
        code, output = pytest(where, tests, "", None, running)
    if code != 0:
        sys.exit(f"the tests fail on the code as it is (pytest exit code {code}: {last_line(output)}); "
                 "nothing was judged")
    code, _ = pytest(where, tests, FORCED_FAIL, None, running)
    if code == 0:
        sys.exit("the tests pass with every mutated function raising: they do not run the mutated copy "
                 f"in {where} (an installed copy first on the path?); nothing was judged")
    return seconds


def screen(root: Path, chosen: List[Tuple[Path, str]], tests: Sequence[str], jobs: int,
           tests_from: Optional[Path], timeout: Optional[float]) -> Dict[str, int]:
    """Judge each chosen mutant, ``jobs`` at a time; each verdict is written to its ``.meta`` as it comes."""
    places = [workspace(root, k, tests_from) for k in range(jobs)]
    running: set = set()  # the tests' processes under way, each in a session of its own
    os.environ[ORDER_ENV] = str(places[0].parent / "order.json")
    try:
        return _screen(places, chosen, tests, timeout, running)
    finally:
        end(running)
        for where in places:
            shutil.rmtree(where.parent, ignore_errors=True)


def end(running: set) -> None:
    """End the processes under way and theirs (Ctrl-C reaches only this process: they have sessions of their own)."""
    for proc in list(running):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # ended meanwhile
            pass


def _screen(places: List[Path], chosen: List[Tuple[Path, str]], tests: Sequence[str], timeout: Optional[float],
            running: set) -> Dict[str, int]:
    clean = check_setup(places[0], tests, running)
    limit = timeout if timeout is not None else max(60.0, 10 * clean)
    print(f"{len(chosen)} mutants; the tests take {clean:.0f} s on the code as it is; timeout {limit:.0f} s",
          flush=True)
    todo: "queue.Queue[Tuple[Path, str]]" = queue.Queue()
    for item in chosen:
        todo.put(item)
    lock, stop, counts = threading.Lock(), threading.Event(), {}

    def work(where: Path) -> None:
        while not stop.is_set():
            try:
                meta, name = todo.get_nowait()
            except queue.Empty:
                return
            start = time.monotonic()
            code, output = pytest(where, tests, name, limit, running)
            if stop.is_set():  # ended by the interrupt: left not judged
                return
            seconds, judged, last = time.monotonic() - start, verdict(code, output), last_line(output)
            with lock:
                if judged is None:
                    stop.set()
                    print(f"interrupted: {name} ({last}); left not judged", flush=True)
                    return
                record(meta, {name: (judged, seconds)})
                counts[judged] = counts.get(judged, 0) + 1
                word = {KILLED: "killed", SURVIVED: "SURVIVED", NO_TESTS: "no tests", TIMEOUT: "timeout"}
                print(f"{word.get(judged, f'exit code {judged}')}: {name} ({seconds:.0f} s) {last}", flush=True)

    threads = [threading.Thread(target=work, args=(where,), daemon=True) for where in places]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.5)
    except KeyboardInterrupt:
        stop.set()
        while any(thread.is_alive() for thread in threads):  # one may start a mutant as the stop comes
            end(running)
            time.sleep(0.1)
        print("stopped: the mutants under way are left not judged", flush=True)
    return counts


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Optional[List[str]] = None) -> None:
    signal.signal(signal.SIGTERM, _interrupted)  # kill, or the end of a background run: as Ctrl-C
    signal.signal(signal.SIGINT, _interrupted)  # also where a shell started this run in the background, SIGINT ignored
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("generate", help="mutmut's generation step alone, in the current folder")
    run = sub.add_parser("run", help="judge the mutants matching the patterns by the named test files")
    run.add_argument("patterns", nargs="+", help="mutant name patterns, as for mutmut run: 'sweeper.storage*'")
    run.add_argument("--tests", required=True, help="the test files (or node ids) to judge by, space-separated; "
                     "pytest options may be among them (--deselect NODE)")
    run.add_argument("--survivors", action="store_true", help="judge again the survivors (and untested, timed out)")
    run.add_argument("--tests-from", type=Path, help="a tests folder to use instead of the one mutmut copied")
    run.add_argument("--jobs", type=int, default=2, help="mutants at once, each in its own copy (default 2)")
    run.add_argument("--timeout", type=float, help="seconds per mutant (default: 10 times the clean run, >= 60)")
    run.add_argument("--root", type=Path, default=Path("mutants"), help="mutmut's mutants/ folder")
    args = parser.parse_args(argv)
    if args.command == "generate":
        generate()
        return
    if not args.root.is_dir():
        parser.error(f"{args.root} is not a folder: run `generate` first, or give --root")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if args.tests_from is not None and not args.tests_from.is_dir():
        parser.error(f"--tests-from {args.tests_from} is not a folder")
    chosen = select(args.root, args.patterns, args.survivors)
    if not chosen:
        parser.error(f"no {'survivor' if args.survivors else 'unjudged mutant'} under {args.root} matches "
                     + " ".join(args.patterns))
    tests_from = args.tests_from.resolve() if args.tests_from is not None else None
    try:
        counts = screen(args.root.resolve(), chosen, args.tests.split(), args.jobs, tests_from, args.timeout)
    except KeyboardInterrupt:
        sys.exit("stopped before any mutant was judged")
    print(f"judged {sum(counts.values())} of {len(chosen)}: {counts.get(KILLED, 0)} killed, "
          f"{counts.get(SURVIVED, 0)} survived, {counts.get(NO_TESTS, 0)} no tests, {counts.get(TIMEOUT, 0)} timeouts")


if __name__ == "__main__":
    main()
