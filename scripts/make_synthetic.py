"""Make synthetic H&E data from a script: the same as `ossiclass synth ...`.

python scripts/make_synthetic.py tiles data/synthetic --per-class 500 --workers 2
python scripts/make_synthetic.py slide data/slides/growth_plate.tif --layout growth_plate
python scripts/make_synthetic.py sheet docs/contact_sheet.jpg
"""

import sys

from ossiclass.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["synth", *sys.argv[1:]]))
