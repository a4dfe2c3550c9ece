"""Numpy-only core: reading micrographs and masks, phase schemas, fractions, tiles, metrics,
condition samplers and the dataset store. Nothing here imports torch, Qt or napari."""
