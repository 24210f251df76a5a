"""One error hierarchy for the engine.

Subclasses also inherit the matching built-in where there is one, so callers may catch either.
Errors are converted at the edge of a subsystem with ``raise ... from exc``.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base of every error the engine raises on purpose."""


class ConfigError(EngineError, ValueError):
    """A setting is missing, malformed or contradictory."""


class StoreError(EngineError):
    """The store (database) failed or holds something unexpected."""


class EventInvalid(EngineError, ValueError):
    """An event does not follow the Segment spec; ``field`` names the offending field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class PayloadTooLarge(EventInvalid):
    """An event or batch exceeds Segment's size limits."""


class BusError(EngineError, ConnectionError):
    """NATS or JetStream could not be reached or refused an operation."""


class NatsServerError(BusError):
    """The embedded nats-server could not be started."""


class WorkflowInvalid(EngineError, ValueError):
    """A workflow definition cannot be loaded; the message says where and why."""


class TemplateInvalid(EngineError, ValueError):
    """A template cannot be compiled or rendered (syntax, sandbox violation, missing part)."""


class RenderError(EngineError):
    """Rendering a template for a given contact failed."""


class HeaderInvalid(EngineError, ValueError):
    """A header value cannot be encoded safely (e.g. an address with no domain)."""


class DeliveryError(EngineError):
    """Base of SMTP delivery failures."""


class RelayUnavailable(DeliveryError, ConnectionError):
    """The relay could not be connected to or dropped the connection."""


class RelayTimeout(DeliveryError, TimeoutError):
    """The relay did not answer in time."""


class TokenInvalid(EngineError, ValueError):
    """An unsubscribe (or other signed) token is malformed or its signature does not match."""


class DryRunError(EngineError, ValueError):
    """A dry run cannot run as asked (too many recorded events, a trigger it cannot replay,
    cancelled); the message says why and what to change."""
