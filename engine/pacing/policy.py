"""The pacing policy: which sends are capped, where they count, and when quiet hours end.

``Pacing.plan`` runs when a send intent is decided (pure: no I/O). For a marketing intent it
records the priority and the local day and ISO week the cap counts it on; when its planned
time falls in quiet hours it moves the intent to the window's end (and its expiry by the same
amount: the mail may not go out before, so it must not go stale before). Transactional intents
keep their time unless their workflow asks for quiet hours explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from engine.pacing.quiet import QuietHours, local_stamp, zone_named

if TYPE_CHECKING:
    from engine.config import Settings

MARKETING = "marketing"
DEFAULT_ZONE = "UTC"


@dataclass(frozen=True)
class Pacing:
    """Caps and quiet hours as the settings give them (``[caps]``, ``[quiet]``)."""

    per_day: int = 0
    per_week: int = 0
    quiet: QuietHours | None = None
    zone_name: str = DEFAULT_ZONE  # for contacts without a (valid) timezone
    _windows: dict[str, QuietHours] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Pacing:
        hours = settings.quiet.hours
        return cls(
            per_day=settings.caps.per_day,
            per_week=settings.caps.per_week,
            quiet=QuietHours.parse(hours) if hours else None,
            zone_name=settings.quiet.timezone or DEFAULT_ZONE,
        )

    @property
    def capped(self) -> bool:
        """Whether any cap is set."""
        return self.per_day > 0 or self.per_week > 0

    def zone(self, name: str | None) -> tuple[str, ZoneInfo]:
        """The contact's zone when it is a known IANA name, else the fallback setting's."""
        if name:
            found = zone_named(name)
            if found is not None:
                return name, found
        fallback = zone_named(self.zone_name) or ZoneInfo(DEFAULT_ZONE)
        return self.zone_name, fallback

    def window(self, category: str, override: str) -> QuietHours | None:
        """The quiet window for a send: the workflow's own, none, or (``default``) the setting's
        for marketing mail; transactional mail is exempt by default."""
        if override == "none":
            return None
        if override == "default":
            return self.quiet if category == MARKETING else None
        found = self._windows.get(override)
        if found is None:
            found = self._windows[override] = QuietHours.parse(override)
        return found

    def plan(
        self, intent: dict[str, Any], *, priority: int, quiet_hours: str, timezone: str | None
    ) -> str | None:
        """Fill the intent's ``priority``, ``cap_day`` and ``cap_week``; defer it out of quiet
        hours. Returns a line for the trace when it was deferred, else None."""
        intent["priority"] = priority
        name, zone = self.zone(timezone)
        note = None
        window = self.window(intent["category"], quiet_hours)
        if window is not None:
            planned = float(intent["next_attempt_at"])
            allowed = window.next_allowed(planned, zone)
            # Kept with the intent so the deliver stage can hold a retry that lands in them.
            intent["context"] = {
                **intent["context"],
                "quiet_hours": {"hours": str(window), "timezone": name},
            }
            if allowed > planned:
                intent["next_attempt_at"] = allowed
                if intent.get("expires_at") is not None:
                    intent["expires_at"] = float(intent["expires_at"]) + (allowed - planned)
                note = f"quiet hours {window} ({name}): deferred to {local_stamp(allowed, zone)}"
        if intent["category"] == MARKETING:
            intent["cap_day"], intent["cap_week"] = cap_keys(intent["next_attempt_at"], zone)
        else:
            intent["cap_day"] = intent["cap_week"] = None
        return note


def cap_keys(t: float, zone: ZoneInfo) -> tuple[str, str]:
    """The local day (``2027-01-15``) and ISO week (``2027-W02``) a send at ``t`` counts on."""
    local = datetime.fromtimestamp(t, zone)
    year, week, _ = local.isocalendar()
    return local.date().isoformat(), f"{year}-W{week:02d}"


def quiet_until(context: dict[str, Any], now: float) -> tuple[float, str] | None:
    """For the deliver stage: when a claimed intent's quiet hours (as planned) end, with the
    reason, if ``now`` is inside them; None when it may go now."""
    spec = context.get("quiet_hours")
    if not isinstance(spec, dict):
        return None
    try:
        window = QuietHours.parse(str(spec.get("hours")))
    except ValueError:
        return None
    zone = zone_named(str(spec.get("timezone") or "")) or ZoneInfo(DEFAULT_ZONE)
    allowed = window.next_allowed(now, zone)
    if allowed <= now:
        return None
    reason = (
        f"quiet hours {window} ({spec.get('timezone')}): held until {local_stamp(allowed, zone)}"
    )
    return allowed, reason
