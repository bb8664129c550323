"""benchmarks/mutant_screen.py: mutmut's mutants of a small project, generated and judged by named test files."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import pytest

from benchmarks.mutant_screen import KILLED, NO_TESTS, SURVIVED, TIMEOUT, durations, verdict

SCREEN = Path(__file__).resolve().parents[1] / "benchmarks" / "mutant_screen.py"

CODE = '''def add(a, b):
    return a + b


def positive(x):
    return x > 0


def countdown(n):
    while n > 0:
        n -= 1
    return n
'''
TEST_ADD = "from pkg.calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"
TEST_POSITIVE = ("from pkg.calc import positive\n\n\n"
                 "def test_positive():\n    assert positive(1) and not positive(0)\n")
TEST_COUNTDOWN = """import os, subprocess, sys
from pkg.calc import countdown


def test_countdown():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with open(os.environ["PIDS"], "a") as f:
        f.write(f"{child.pid}\\n")
    try:
        assert countdown(3) == 0
    finally:
        child.kill()
"""


def project(root: Path, tests: str) -> Path:
    """A package of three functions, a test file, and the [tool.mutmut] that names the package; generated."""
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "calc.py").write_text(CODE)
    (root / "tests").mkdir()
    (root / "tests" / "test_calc.py").write_text(tests)
    (root / "pyproject.toml").write_text('[tool.mutmut]\nsource_paths = ["pkg"]\n')
    screen(root, "generate")
    return root


def screen(root: Path, *args: str, ok: bool = True, env: Optional[dict] = None) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, str(SCREEN), *args], cwd=root, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})
    assert (done.returncode == 0) == ok, done.stdout + done.stderr
    return done


def codes(root: Path) -> dict:
    return json.loads((root / "mutants" / "pkg" / "calc.py.meta").read_text())["exit_code_by_key"]


def by_function(found: dict) -> dict:
    """{function: sorted verdicts}."""
    out: dict = {}
    for name, code in found.items():
        out.setdefault(name.split(".x_")[1].split("__mutmut_")[0], []).append(code)
    return {k: sorted(v, key=str) for k, v in out.items()}


def test_mutants_are_judged_by_the_named_files_and_survivors_again_by_tests_written_since(tmp_path):
    root = project(tmp_path / "p", TEST_ADD)
    assert set(by_function(codes(root))) == {"add", "positive", "countdown"}
    assert all(code is None for code in codes(root).values())

    out = screen(root, "run", "--tests", "tests/test_calc.py", "pkg.calc.x_add*", "pkg.calc.x_positive*").stdout
    judged = by_function(codes(root))
    assert judged["add"] == [KILLED]  # a + b as a - b
    assert judged["positive"] and set(judged["positive"]) == {SURVIVED}  # no test calls it
    assert set(judged["countdown"]) == {None}  # not matched: left not judged
    assert "the tests take" in out and f"judged {1 + len(judged['positive'])} of {1 + len(judged['positive'])}" in out
    assert out.count("SURVIVED: pkg.calc.x_positive__mutmut_") == len(judged["positive"])
    durations = json.loads((root / "mutants" / "pkg" / "calc.py.meta").read_text())["durations_by_key"]
    assert set(durations) == {n for n, c in codes(root).items() if c is not None}
    assert not list(tmp_path.glob("p/mutants.screen*"))  # the copies are removed

    # a second run judges only what is not judged yet; none matches
    assert "no unjudged mutant" in screen(root, "run", "--tests", "tests/test_calc.py", "pkg.calc.x_add*",
                                          ok=False).stderr

    # tests written since, judging the survivors again: positive(1) and not positive(0) kill every mutant
    since = tmp_path / "since"
    since.mkdir()
    (since / "test_calc.py").write_text(TEST_ADD + "\n\n" + TEST_POSITIVE)
    out = screen(root, "run", "--survivors", "--tests-from", str(since), "--tests", "tests/test_calc.py",
                 "pkg.calc.x_positive*").stdout
    assert set(by_function(codes(root))["positive"]) == {KILLED}
    assert by_function(codes(root))["add"] == [KILLED]
    assert "SURVIVED" not in out
    table = subprocess.run([sys.executable, str(SCREEN.with_name("mutmut_table.py")), "--root", "mutants",
                            "pkg.calc.x_a*", "pkg.calc.x_p*"], cwd=root, capture_output=True, text=True, check=True).stdout
    n = 1 + len(judged["positive"])
    assert f"| `pkg.calc` | {n} | {n} | 0 | 0 | 0 | 0 | 100.0% |" in table


def test_the_fastest_test_that_can_kill_a_mutant_runs_first(tmp_path):
    slow_first = ("import time\nfrom pkg.calc import add\n\n\n"
                  "def test_slow():\n    time.sleep(2)\n\n\n" + TEST_ADD.split("\n\n\n", 1)[1])
    root = project(tmp_path / "p", slow_first)
    out = screen(root, "run", "--tests", "tests/test_calc.py", "pkg.calc.x_add*").stdout
    assert by_function(codes(root))["add"] == [KILLED]
    (line,) = [line for line in out.splitlines() if line.startswith("killed: pkg.calc.x_add__mutmut_1 ")]
    assert " 1 failed in " in line  # not "1 failed, 1 passed": the slow test, first in its file, did not run


def test_every_tests_seconds_are_read_from_pytests_durations_table():
    table = """============================= slowest durations ==============================
2.00s call     tests/test_calc.py::test_slow
0.10s setup    tests/test_calc.py::test_x[a b: c]
0.25s call     tests/test_calc.py::test_x[a b: c]
0.00s teardown tests/test_calc.py::test_slow
(3 durations < 0.005s hidden.  Use -vv to show these durations.)
1.5 passed in 2.4s
========================= 2 passed in 2.41s ========================="""
    assert durations(table) == {"tests/test_calc.py::test_slow": 2.0, "tests/test_calc.py::test_x[a b: c]": 0.35}


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] not in "ZX"
    except FileNotFoundError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_mutant_that_never_ends_is_a_timeout_and_the_processes_of_its_tests_are_ended(tmp_path):
    root = project(tmp_path / "p", TEST_COUNTDOWN)
    pids = tmp_path / "pids"
    out = screen(root, "run", "--timeout", "4", "--tests", "tests/test_calc.py", "pkg.calc.x_countdown*",
                 env={"PIDS": str(pids)}).stdout
    judged = by_function(codes(root))["countdown"]
    assert TIMEOUT in judged  # n -= 1 as n += 1 (or n = 1): the loop never ends
    assert "timeout: pkg.calc.x_countdown__mutmut_" in out and "past 4 s" in out
    assert set(judged) <= {KILLED, TIMEOUT}
    started = [int(line) for line in pids.read_text().split()]
    assert len(started) == 3 + len(judged)  # the clean run (timed, then in its order), the forced failure's, a mutant
    assert not [pid for pid in started if running(pid)]  # a timed-out test's child is ended with it


def test_tests_that_fail_on_the_code_or_do_not_run_the_mutated_copy_judge_nothing(tmp_path):
    root = project(tmp_path / "p", TEST_ADD.replace("== 5", "== 6"))
    err = screen(root, "run", "--tests", "tests/test_calc.py", "pkg.calc*", ok=False).stderr
    assert "the tests fail on the code as it is (pytest exit code 1: 1 failed" in err
    assert set(codes(root).values()) == {None}

    (root / "mutants" / "tests" / "test_calc.py").write_text("def test_nothing():\n    assert True\n")
    err = screen(root, "run", "--tests", "tests/test_calc.py", "pkg.calc*", ok=False).stderr
    assert "the tests pass with every mutated function raising: they do not run the mutated copy" in err
    assert set(codes(root).values()) == {None}

    err = screen(root, "run", "--tests", "tests/test_calc.py", "other*", ok=False).stderr
    assert "no unjudged mutant under mutants matches other*" in err
    assert "is not a folder" in screen(root, "run", "--root", "elsewhere", "--tests", "t", "pkg*", ok=False).stderr
    assert "--tests-from nowhere is not a folder" in screen(root, "run", "--tests-from", "nowhere", "--tests", "t",
                                                            "pkg*", ok=False).stderr


@pytest.mark.parametrize("code, output, expected", [
    (0, "1 passed", SURVIVED),
    (1, "1 failed", KILLED),
    (3, "INTERNALERROR", KILLED),
    (5, "no tests ran", NO_TESTS),
    (None, "past 60 s", TIMEOUT),
    (2, "E   ImportError\n!!! Interrupted: 1 error during collection !!!\n1 error in 0.2s", KILLED),
    (2, "KeyboardInterrupt\n1 passed in 3.0s", None),  # Ctrl-C: left not judged
    (-11, "", -11),  # a crash is recorded as it is (mutmut: segfault)
])
def test_verdicts_are_mutmuts_exit_codes(code, output, expected):
    assert verdict(code, output) == expected


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_stopped_run_leaves_the_mutants_under_way_not_judged_and_ends_their_processes(tmp_path):
    root = project(tmp_path / "p", TEST_COUNTDOWN)
    pids = tmp_path / "pids"
    run = subprocess.Popen([sys.executable, str(SCREEN), "run", "--timeout", "300", "--tests", "tests/test_calc.py",
                            "pkg.calc.x_countdown*"], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, env={**os.environ, "PIDS": str(pids)})
    assert run.stdout is not None
    seen = [run.stdout.readline()]  # "N mutants; the tests take ...": the setup is checked
    assert "mutants; the tests take" in seen[0], seen
    while not pids.exists() or len(pids.read_text().split()) < 5:  # the setup's three runs, two mutants under way
        time.sleep(0.2)
    time.sleep(2)  # the endless ones (n += 1, n = 1) are still counting down
    run.send_signal(signal.SIGTERM)
    rest = run.communicate(timeout=60)[0]
    assert run.returncode == 0 and "stopped: the mutants under way are left not judged" in rest, rest
    judged = by_function(codes(root))["countdown"]
    assert None in judged and set(judged) <= {KILLED, None}  # nothing under way recorded as killed or timed out
    assert not [pid for pid in map(int, pids.read_text().split()) if running(pid)]
    assert not list(tmp_path.glob("p/mutants.screen*"))
