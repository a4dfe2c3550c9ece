"""napari-microsynth: phase segmentation and synthetic training data for metallographic micrographs.

Importing the package is cheap; torch, diffusers and napari are imported only where they are used.
"""
__version__ = "0.1.0"
