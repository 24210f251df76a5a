"""The deliver stage: claim send intents, re-check, render, send over pooled SMTP, record outcomes.

``DeliveryService`` is what a node runs; ``RouteSpec`` (a ``RelayConfig`` and ``RouteLimits``)
says where and how fast each route sends (docs/routes.md).
"""

from engine.deliver.limits import DomainRule, Rate, RouteLimits
from engine.deliver.policy import DeliveryTuning
from engine.deliver.relay import RelayConfig
from engine.deliver.route import Route
from engine.deliver.routes import RouteSpec
from engine.deliver.service import DeliveryService

__all__ = [
    "DeliveryService",
    "DeliveryTuning",
    "DomainRule",
    "Rate",
    "RelayConfig",
    "Route",
    "RouteLimits",
    "RouteSpec",
]
