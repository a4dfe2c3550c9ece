"""Fraction tables and histograms as a user reads them."""
from __future__ import annotations

import numpy as np

from napari_microsynth.core.schema import PhaseSchema
from napari_microsynth.engines.reports import plot_fraction_histograms

UHCS = PhaseSchema.bundled("uhcs")


def test_histograms_of_two_tiles_count_in_whole_samples(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to read its axes
    fractions = np.array([[0.7, 0.1, 0.15, 0.05], [0.6, 0.2, 0.1, 0.1]])
    assert plot_fraction_histograms(tmp_path / "h.png", fractions, UHCS).stat().st_size > 1000
    for ax in figures[0].axes:
        ticks = [t for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
