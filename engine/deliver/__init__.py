"""The deliver stage: claim send intents, re-check, render, send over pooled SMTP, record outcomes.

``DeliveryService`` is what a node runs; ``RelayConfig`` says where the default route sends.
"""

from engine.deliver.policy import DeliveryTuning
from engine.deliver.relay import RelayConfig
from engine.deliver.route import Route
from engine.deliver.service import DeliveryService

__all__ = ["DeliveryService", "DeliveryTuning", "RelayConfig", "Route"]
