"""The event as the engine carries it between ingest and decide.

Events follow Segment's spec (track, identify, page, screen, group, alias). On the wire (NATS,
the EVENTS stream) an event is the Segment JSON object, with ``messageId`` always set and
``receivedAt`` added at ingest. ``Event`` is the parsed, validated form the decide stage uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

EVENT_TYPES = ("track", "identify", "page", "screen", "group", "alias")


@dataclass(slots=True)
class Event:
    """One validated Segment event."""

    message_id: str
    type: str
    user_id: str | None
    anonymous_id: str | None
    name: str | None  # track: the event name; page/screen: the page name
    properties: dict[str, Any] = field(default_factory=dict)
    traits: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    timestamp: float = 0.0  # when it happened (epoch seconds, UTC)
    received_at: float = 0.0  # when ingest accepted it (epoch seconds, UTC)

    @property
    def contact_key(self) -> str:
        """The contact this event is about: the userId, else ``anon:<anonymousId>``."""
        if self.user_id:
            return self.user_id
        return f"anon:{self.anonymous_id}"

    @property
    def activity_name(self) -> str:
        """The name recorded in a contact's activity and matched by triggers.

        ``track`` events use their event name; a page view is ``Page Viewed``; identify is
        ``Identified``.
        """
        if self.type == "track" and self.name:
            return self.name
        return {
            "page": "Page Viewed",
            "screen": "Screen Viewed",
            "identify": "Identified",
            "group": "Group Joined",
            "alias": "Aliased",
        }.get(self.type, self.type)
