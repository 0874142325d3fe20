"""scikit-image preprocessing: stain normalisation and augmentation, tissue detection, tiling."""
