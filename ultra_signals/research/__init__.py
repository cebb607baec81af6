"""Research: pure logic that measures the signal path on recorded data (labels, quality model, selection, stats).

Nothing here does I/O or reads a clock; :mod:`ultra_signals.apps.evaluate` feeds it and writes the reports.
"""
