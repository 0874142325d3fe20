"""Train the tissue classifier: `python scripts/train.py --config configs/default.yaml [overrides]`.

The same as `ossiclass train`; every key in the YAML is a constructor argument of
`TissueClassifier` (model:), `TileDataModule` (data:) or the Lightning Trainer (trainer:).
"""

from ossiclass.train import run_cli

if __name__ == "__main__":
    run_cli()
