"""Personalized offers: discount codes per recipient, generated (signed) or drawn from a pool."""

from engine.offers.model import Offer, OfferBook, ValueRule, parse_offer, parse_offers

__all__ = ["Offer", "OfferBook", "ValueRule", "parse_offer", "parse_offers"]
