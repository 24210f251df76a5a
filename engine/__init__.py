"""Campaign engine: a headless asyncio service turning events into personalized email.

The engine never imports Qt; the console talks to it over NATS only.
"""

__version__ = "0.1.0"
