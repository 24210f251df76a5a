"""Offer definitions: ``[offers.NAME]`` tables in the settings or in a workflow file.

::

    [offers.welcome10]
    kind = "generated"          # or "pool": codes imported with `campaign-engine offers import`
    prefix = "SAVE"             # generated codes look like SAVE-7KQ2-M9XD
    description = "Welcome discount"
    value = "10%"               # when no rule matches
    rules = [
      { segment = "vip", value = "20%" },
      { where = [{ trait = "lifetime_value", op = "gt", value = 500 }], value = "15%" },
    ]

The first rule that holds gives the value: ``segment`` (the contact is a member of it now) and
``where`` (conditions over the contact's traits, as in workflows) must both hold when given.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # engine.decide's workflows parse offers: its conditions are imported late
    from engine.decide.conditions import Condition

KINDS = ("generated", "pool")
OFFER_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,99}")
PREFIX = re.compile(r"[A-Z][A-Z0-9]{0,11}")
_OFFER_KEYS = {"kind", "prefix", "description", "value", "rules"}
_RULE_KEYS = {"segment", "where", "value"}
_SEGMENT_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,99}")


@dataclass(frozen=True, slots=True)
class ValueRule:
    """One rule: the value when the contact is in ``segment`` and ``where`` holds."""

    value: str
    segment: str | None = None
    where: tuple[Condition, ...] = ()

    def describe(self) -> str:
        parts = [f"in segment {self.segment}"] if self.segment else []
        parts += [c.describe() for c in self.where]
        return " and ".join(parts) or "always"


@dataclass(frozen=True)
class Offer:
    """A validated offer; ``secret`` (bound by :class:`OfferBook`) signs generated codes."""

    id: str
    kind: str
    value: str
    prefix: str = "SAVE"
    description: str = ""
    rules: tuple[ValueRule, ...] = ()
    secret: bytes = field(default=b"", repr=False, compare=False)

    def segments(self) -> set[str]:
        return {r.segment for r in self.rules if r.segment}


def _value(raw: object, where: str) -> str:
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise ValueError(f'{where}: value must be text such as "15%" or a number, got {raw!r}')
    text = str(raw).strip()
    if not text or len(text) > 100:
        raise ValueError(f"{where}: value must be 1 to 100 characters")
    return text


def parse_offer(offer_id: object, raw: object, where: str) -> Offer:
    """One ``[offers.NAME]`` table; ``ValueError`` naming the key at fault."""
    if not isinstance(offer_id, str) or not OFFER_ID.fullmatch(offer_id):
        raise ValueError(
            f"{where}: an offer name is lower-case letters, digits, '-' or '_', got {offer_id!r}"
        )
    where = f"{where}.{offer_id}"
    if not isinstance(raw, Mapping):
        raise ValueError(f"[{where}] must be a table")
    extra = sorted(set(raw) - _OFFER_KEYS)
    if extra:
        raise ValueError(f"[{where}]: unknown key(s) {', '.join(extra)}")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise ValueError(f'{where}.kind must be "generated" or "pool", got {kind!r}')
    prefix = raw.get("prefix", "SAVE")
    if not isinstance(prefix, str) or not PREFIX.fullmatch(prefix):
        raise ValueError(
            f"{where}.prefix must be 1 to 12 upper-case letters or digits, starting with a "
            f"letter, got {prefix!r}"
        )
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise ValueError(f"{where}.description must be text")
    if "value" not in raw:
        raise ValueError(f"{where}: value is missing (the value when no rule matches)")
    rules_raw = raw.get("rules", [])
    if not isinstance(rules_raw, list):
        raise ValueError(f"{where}.rules must be a list of tables")
    rules = []
    for i, rule in enumerate(rules_raw):
        at = f"{where}.rules[{i}]"
        if not isinstance(rule, Mapping):
            raise ValueError(f"{at} must be a table")
        extra = sorted(set(rule) - _RULE_KEYS)
        if extra:
            raise ValueError(f"{at}: unknown key(s) {', '.join(extra)}")
        segment = rule.get("segment")
        if segment is not None and (
            not isinstance(segment, str) or not _SEGMENT_ID.fullmatch(segment)
        ):
            raise ValueError(f"{at}.segment must be a segment id, got {segment!r}")
        from engine.decide.conditions import parse_conditions

        conditions = parse_conditions(rule.get("where"), f"{at}.where")
        if any(c.activity_windows() for c in conditions):
            raise ValueError(f"{at}.where: only trait conditions (and all/any/not of them)")
        rules.append(ValueRule(_value(rule.get("value"), at), segment, conditions))
    return Offer(
        id=offer_id,
        kind=str(kind),
        value=_value(raw["value"], where),
        prefix=prefix,
        description=description.strip(),
        rules=tuple(rules),
    )


def parse_offers(raw: object, where: str = "offers") -> dict[str, Offer]:
    """An ``[offers]`` table of offer tables."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ValueError(f"[{where}] must be a table of offers")
    return {name: parse_offer(name, table, where) for name, table in raw.items()}


@dataclass(frozen=True)
class OfferBook:
    """The offers configured in the settings, and the key generated codes are signed with."""

    offers: Mapping[str, Offer] = field(default_factory=dict)
    secret: bytes = field(default=b"", repr=False)

    def bind(self, own: Mapping[str, Offer]) -> dict[str, Offer]:
        """A workflow's offers: the configured ones, overridden by its own, all with the key."""
        merged = {**self.offers, **own}
        return {name: replace(offer, secret=self.secret) for name, offer in merged.items()}

    @classmethod
    def from_settings(cls, raw: Mapping[str, Any], secret: bytes) -> OfferBook:
        return cls(parse_offers(raw), secret)
