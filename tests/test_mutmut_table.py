"""benchmarks/mutmut_table.py: a mutmut run's .meta files as docs/tests.md's per-module table."""

import json

import pytest

from benchmarks.mutmut_table import main


def write_meta(root, path, codes):
    meta = root / path
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps({"exit_code_by_key": codes, "durations_by_key": {}}))


def test_a_row_per_module_with_each_status_counted_and_the_share_killed_of_those_checked(tmp_path, capsys):
    write_meta(tmp_path, "sweeper/budget.py.meta", {
        "sweeper.budget.xǁBudgetGateǁcheck__mutmut_1": 1, "sweeper.budget.xǁBudgetGateǁcheck__mutmut_2": 0,
        "sweeper.budget.x_helper__mutmut_1": 33, "sweeper.budget.x_helper__mutmut_2": None,
        "sweeper.budget.x_helper__mutmut_3": 36})
    write_meta(tmp_path, "mnist_arch/data.py.meta", {"mnist_arch.data.x_augment__mutmut_1": 3,
                                                     "mnist_arch.data.x_augment__mutmut_2": 1})
    main(["--root", str(tmp_path), "--survivors"])
    assert capsys.readouterr().out.splitlines() == [
        "| module | mutants | killed | survived | no tests | timeouts | not checked | killed of checked |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        "| `mnist_arch.data` | 2 | 2 | 0 | 0 | 0 | 0 | 100.0% |",
        "| `sweeper.budget` | 5 | 1 | 1 | 1 | 1 | 1 | 25.0% |",
        "| **all** | 7 | 3 | 1 | 1 | 1 | 1 | 50.0% |",
        "survived: sweeper.budget.xǁBudgetGateǁcheck__mutmut_2",
        "no tests: sweeper.budget.x_helper__mutmut_1",
        "timeout: sweeper.budget.x_helper__mutmut_3",
    ]
    main(["--root", str(tmp_path), "sweeper.budget.x_helper*"])  # as mutmut run's patterns
    assert capsys.readouterr().out.splitlines()[2] == "| `sweeper.budget` | 3 | 0 | 0 | 1 | 1 | 1 | 0.0% |"


def test_no_run_or_no_match_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--root", str(tmp_path / "mutants")])
    assert "is not a folder: run mutmut first" in capsys.readouterr().err
    write_meta(tmp_path, "sweeper/budget.py.meta", {"sweeper.budget.x_helper__mutmut_1": 1})
    with pytest.raises(SystemExit):
        main(["--root", str(tmp_path), "sweeper.claim*"])
    assert capsys.readouterr().err.rstrip().endswith(f"error: no mutants under {tmp_path} match sweeper.claim*")
