"""Engines: training loops, inference, evaluation, reports and export. They take progress/should_stop callbacks and know nothing of Qt or the terminal."""
