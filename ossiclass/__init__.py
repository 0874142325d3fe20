"""ossiclass: tissue classes of developing and healing bone from H&E tiles."""

from ossiclass.classes import CLASSES, TISSUE_CLASSES

__version__ = "0.1.0"

__all__ = ["CLASSES", "TISSUE_CLASSES", "__version__"]
