"""benchmarks/seed_runs.py's comparison of a lever's two levels, seed by seed."""
import json
from pathlib import Path

import pytest

from benchmarks.seed_runs import paired


def runs(folder: Path, scores: dict) -> Path:
    folder.mkdir()
    for seed, score in scores.items():
        (folder / f"seed{seed}.metrics.json").write_text(json.dumps({"min_last_k_test_acc": score}))
    return folder


def test_a_lever_is_compared_on_the_seeds_both_levels_ran_with_standard_errors(tmp_path):
    base = runs(tmp_path / "base", {11: 99.40, 12: 99.50, 13: 99.30, 19: 99.9})  # 19: no partner, left out
    lever = runs(tmp_path / "lever", {11: 99.44, 12: 99.52, 13: 99.36, 20: 99.0})
    lines = paired(base, lever).splitlines()
    assert lines[0] == "| seed | base | lever | difference |"
    assert lines[2:5] == ["| 11 | 99.40 | 99.44 | +0.04 |", "| 12 | 99.50 | 99.52 | +0.02 |", "| 13 | 99.30 | 99.36 | +0.06 |"]
    # means 99.400 and 99.440; se = sd / sqrt(3): 0.1/1.732 = 0.058, 0.08/1.732 = 0.046; differences 0.04 +- 0.02/1.732
    assert lines[5] == "| mean of 3 (se) | 99.400 (0.058) | 99.440 (0.046) | +0.040 (0.012) |"
    assert lines[6] == "| worst; >= 99.4 | 99.30; 2/3 | 99.36; 2/3 | |"


def test_a_comparison_needs_two_shared_seeds(tmp_path):
    with pytest.raises(SystemExit, match="share 1 seed"):
        paired(runs(tmp_path / "a", {11: 99.4, 12: 99.5}), runs(tmp_path / "b", {11: 99.4, 13: 99.5}))
