"""napari dock widgets (Qt). Thin adapters over the engines; model code never runs on the UI thread."""
