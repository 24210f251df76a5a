"""The Qt operations console: live pipeline panels and controls for campaign engines.

It talks to engines only over NATS (the ``metrics.<node>`` stream and the ``control.<node>.<verb>``
request/reply API), so a local stack and a remote cluster look the same. It never imports the
engine's runtime; pure engine modules (``engine.telemetry``'s bucket bounds) are fine.
"""

__version__ = "0.1.0"
