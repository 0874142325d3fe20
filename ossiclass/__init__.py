"""ossiclass: tissue classes of developing and healing bone from H&E tiles."""

from ossiclass.classes import CLASSES, TISSUE_CLASSES

__version__ = "0.1.0"

__all__ = ["CLASSES", "TISSUE_CLASSES", "__version__", "load_model", "predict_image"]


def __getattr__(name: str):
    """`load_model` and `predict_image` import torch only when first used: the CLI starts fast."""
    if name in ("load_model", "predict_image"):
        from ossiclass import predict

        return getattr(predict, name)
    raise AttributeError(f"module 'ossiclass' has no attribute {name!r}")
