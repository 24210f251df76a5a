"""What ingest tests share: the write key, the auth header and a handle on a running service."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import aiohttp
import orjson
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg

from engine.bus import EVENTS_STREAM
from engine.telemetry import Telemetry
from engine.unsubscribe import UnsubscribeTokens

WRITE_KEY = "wk_test_0123456789"
# Segment's convention: the write key is the basic-auth user name, the password is empty.
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}


@dataclass
class Ingest:
    """A running ingest service and what a test needs to look at it."""

    url: str
    nc: NatsClient
    js: JetStreamContext
    session: aiohttp.ClientSession
    telemetry: Telemetry
    tokens: UnsubscribeTokens
    unsubscribed: list[tuple[str, str, str]] = field(default_factory=list)
    health: dict[str, object] = field(default_factory=dict)

    async def stream(self) -> list[RawStreamMsg]:
        """Every message in the EVENTS stream, in order."""
        info = await self.js.stream_info(EVENTS_STREAM)
        if not info.state.messages:
            return []
        return [
            await self.js.get_msg(EVENTS_STREAM, seq)
            for seq in range(info.state.first_seq, info.state.last_seq + 1)
        ]


async def message_ids(js: JetStreamContext) -> list[str]:
    """The messageId of every message in the EVENTS stream, in stream order."""
    info = await js.stream_info(EVENTS_STREAM)
    if not info.state.messages:
        return []
    ids = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(EVENTS_STREAM, seq)
        ids.append(str(orjson.loads(msg.data or b"")["messageId"]))
    return ids
