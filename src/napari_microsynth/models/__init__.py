"""Torch modules (segmenters, generators' networks) and the model-folder format."""
