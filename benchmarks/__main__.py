"""``python -m benchmarks <suite> [--quick] [options]``, ``python -m benchmarks list`` or ``report [--check]``."""

from __future__ import annotations

import importlib
import sys

from ._report import suites

USAGE = """usage: python -m benchmarks <suite> [--quick] [options]   run a suite (--help: its options)
       python -m benchmarks list                            the suites
       python -m benchmarks report [--check]                render the tables of the docs from benchmarks/results

Run from the repository root. --quick runs a small, fast configuration and writes to benchmarks/results/quick/.
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    known = suites()
    if not argv or argv[0] in ("-h", "--help", "list"):
        if argv[:1] != ["list"]:
            print(USAGE + "\nsuites:")
        width = max(map(len, known))
        for name, description in known.items():
            print(f"  {name:<{width}}  {description}")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name == "report":
        from ._report import main as report

        return report(rest)
    if name not in known:
        print(f"unknown suite {name!r}; `python -m benchmarks list` names them", file=sys.stderr)
        return 2
    importlib.import_module(f"{__package__}.{name}").main(rest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
