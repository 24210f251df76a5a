"""Reusable Qt widgets for the console: status vocabulary, number formats, live charts, tiles.

The widgets know nothing of the engine or the console (an import-linter contract): they take
plain numbers and strings, and the console wires them to its data. Modules:

- ``theme``: statuses and their colours/icons, palettes, relative fonts, the app stylesheet.
- ``format``: rates, durations, percentages, counts, bytes, ages (pure functions).
- ``ring_buffer``: preallocated time series buffers for live data.
- ``status_pill``, ``stat_tile``, ``live_chart`` (+ ``chart_controls``), ``histogram``,
  ``stage_bar``, ``sparkline_table``, ``nav_rail``, ``banner``, ``empty_state``, ``confirm``.
- ``gallery``: every widget with fake live data, light and dark (``python -m widgets.gallery``).
"""
