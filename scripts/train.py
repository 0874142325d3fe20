"""Train the tissue classifier: `python scripts/train.py --config configs/default.yaml [overrides]`.

The same as `ossiclass train`, errors included; every key in the YAML is a constructor
argument of `TissueClassifier` (model:), `TileDataModule` (data:) or the Lightning Trainer
(trainer:).
"""

import sys

from ossiclass.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
