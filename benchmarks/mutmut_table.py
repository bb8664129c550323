"""mutmut's results as docs/tests.md's per-module table, read from the ``mutants/`` folder of a run.

    python benchmarks/mutmut_table.py [--root mutants] [--survivors] ["sweeper.budget*" ...]

A row per module: mutants, killed, survived, no tests (no test of the fast run reaches the
function), timeouts, not checked yet, and the share killed of those checked. Patterns (as for
``mutmut run``) keep only the mutants whose names match; ``--survivors`` lists every survivor and
untested mutant by name, for ``mutmut show NAME``. Reads the run's ``.meta`` files, so it can be
used while the run goes on.
"""

import argparse
import fnmatch
import json
from collections import Counter
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

# mutmut 3.8's exit codes (mutmut/stats.py), by what they say about the tests
KILLED, SURVIVED, NO_TESTS, TIMEOUT, PENDING, OTHER = "killed", "survived", "no tests", "timeout", "not checked", "other"
STATUS = {1: KILLED, 3: KILLED, 37: KILLED, 0: SURVIVED, 5: NO_TESTS, 33: NO_TESTS, 36: TIMEOUT, -24: TIMEOUT,
          24: TIMEOUT, 152: TIMEOUT, 255: TIMEOUT, None: PENDING}
COLUMNS = (KILLED, SURVIVED, NO_TESTS, TIMEOUT, PENDING)


def statuses(root: Path, patterns: Iterable[str] = ()) -> List[Tuple[str, str, str]]:
    """(module, mutant name, status) for every mutant of the run under ``root`` matching a pattern (all if none)."""
    patterns = list(patterns)
    found = []
    for meta in sorted(root.rglob("*.py.meta")):
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            if patterns and not any(fnmatch.fnmatch(name, p) for p in patterns):
                continue
            module = name.split(".x_")[0].split(".xǁ")[0]
            found.append((module, name, STATUS.get(code, OTHER)))
    return found


def table(found: List[Tuple[str, str, str]]) -> str:
    """The markdown table: a row per module and a total."""
    per: Dict[str, Counter] = {}
    for module, _, status in found:
        per.setdefault(module, Counter())[status] += 1
    per["**all**"] = sum(per.values(), Counter())

    def share(c: Counter) -> str:
        checked = sum(c.values()) - c[PENDING]
        return f"{100 * c[KILLED] / checked:.1f}%" if checked else "-"

    lines = ["| module | mutants | killed | survived | no tests | timeouts | not checked | killed of checked |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for module, c in per.items():
        name = module if module == "**all**" else f"`{module}`"
        lines.append(f"| {name} | {sum(c.values())} | " + " | ".join(str(c[k]) for k in COLUMNS) + f" | {share(c)} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("patterns", nargs="*", help="mutant name patterns, e.g. 'sweeper.budget*' (default: all)")
    parser.add_argument("--root", type=Path, default=Path("mutants"), help="the run's mutants/ folder")
    parser.add_argument("--survivors", action="store_true", help="also list survivors and untested mutants by name")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        parser.error(f"{args.root} is not a folder: run mutmut first, or give --root")
    found = statuses(args.root, args.patterns)
    if not found:
        parser.error(f"no mutants under {args.root} match {' '.join(args.patterns) or 'anything'}")
    print(table(found))
    if args.survivors:
        for _, name, status in found:
            if status in (SURVIVED, NO_TESTS, TIMEOUT, OTHER):
                print(f"{status}: {name}")


if __name__ == "__main__":
    main()
