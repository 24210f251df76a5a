"""What a dry run counts: mail (or entries) per hour and per recipient domain, and samples."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

HOUR = 3600.0
SAMPLE = 20
TOP_DOMAINS = 50


def hour_of(t: float) -> float:
    """The start of the UTC hour ``t`` falls in."""
    return float(int(t // HOUR) * HOUR)


def domain_of(address: str | None) -> str:
    return address.rpartition("@")[2].lower() if address and "@" in address else ""


@dataclass
class Tally:
    """Counts of one kind of outcome (mail that would go out; contacts entering a segment)."""

    sample_size: int = SAMPLE
    count: int = 0
    hours: Counter[float] = field(default_factory=Counter)
    domains: Counter[str] = field(default_factory=Counter)
    recipients: set[str] = field(default_factory=set)
    sample: list[dict[str, Any]] = field(default_factory=list)

    def add(self, at: float, contact_id: str, address: str | None, row: dict[str, Any]) -> None:
        self.count += 1
        self.hours[hour_of(at)] += 1
        self.domains[domain_of(address) or "(no address)"] += 1
        self.recipients.add(contact_id)
        if len(self.sample) < self.sample_size:
            self.sample.append(row)

    def per_hour(self) -> list[dict[str, Any]]:
        return [{"hour": h, "count": n} for h, n in sorted(self.hours.items())]

    def per_domain(self) -> list[dict[str, Any]]:
        """Busiest first; the tail beyond ``TOP_DOMAINS`` summed as ``(other)``."""
        ranked = self.domains.most_common()
        rows = [{"domain": d, "count": n} for d, n in ranked[:TOP_DOMAINS]]
        rest = sum(n for _, n in ranked[TOP_DOMAINS:])
        if rest:
            rows.append({"domain": "(other)", "count": rest})
        return rows
