"""storm's benchmark suites: ``python -m benchmarks list`` names them, ``python -m benchmarks <suite>`` runs one.

Each suite writes its numbers, machine, versions and date to ``benchmarks/results/``; ``python -m benchmarks report``
renders the tables of ``docs/benchmarks.md`` and README.md from those files (``--check``: fail if they differ).
Importing this package imports nothing else.
"""
