"""The benchmarks of `scripts/benchmark.py`, one module each.

Every benchmark module has `run(...) -> dict`, its figures as plain data (JSON-ready: numbers,
strings, lists, dicts; `"what"` says what was measured), and `report(figures) -> str`, the lines
the command prints. `command` holds the command's parser and runs a benchmark from its
arguments; `table` is `all`; `common` holds what several benchmarks share.
"""
