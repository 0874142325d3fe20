"""Benchmarks that print figures.

    python scripts/benchmark.py {synth,colour-baseline,variety,slide,stain,stain-spread,tissue,
                                 agreement,finemap,measures,scales,styles,classify,
                                 real,finetune,real-finetune,all} [--json FILE]

`all` trains the default model, runs every other benchmark with it, and writes one Markdown
table of every figure beside its baseline from the same run (`--out`, default
outputs/benchmarks.md).

Each prints what it measured and the settings it used, and with `--json FILE` also writes the
figures as data; none asserts anything. The benchmarks are modules of `scripts/benchmarks/`,
each with `run(...) -> dict` and `report(figures) -> str`.
"""

import sys

from benchmarks.command import main

if __name__ == "__main__":
    sys.exit(main(description=__doc__))
