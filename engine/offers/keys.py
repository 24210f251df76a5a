"""The key that signs generated offer codes, derived from the engine's secret."""

from __future__ import annotations

import hashlib
import hmac

from engine.config import Settings
from engine.offers.model import OfferBook
from engine.unsubscribe import load_or_create_secret

_PURPOSE = b"campaign-console offer codes v1"


def offer_secret(engine_secret: bytes) -> bytes:
    """A key for offer codes only: an unsubscribe token and an offer code never share one."""
    return hmac.new(engine_secret, _PURPOSE, hashlib.sha256).digest()


def offer_book(settings: Settings) -> OfferBook:
    """The configured offers with the signing key from the data directory's engine secret
    (``unsubscribe.key``, created on first use, mode 0600)."""
    secret = load_or_create_secret(settings.data_path / "unsubscribe.key")
    return OfferBook.from_settings(settings.offers, offer_secret(secret))
