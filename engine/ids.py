"""Identifiers: time-ordered, URL-safe, unique across nodes."""

from __future__ import annotations

import hashlib
import os
import time


def new_id() -> str:
    """A UUIDv7-style 32-hex-digit id: millisecond time prefix, then random bits."""
    ms = int(time.time() * 1000)
    return f"{ms:012x}{os.urandom(10).hex()}"


def dedup_key(workflow_id: str, step_id: str, contact_id: str, event_id: str) -> str:
    """The key of "one send per (workflow, step, contact, trigger event)"."""
    raw = "\x1f".join((workflow_id, step_id, contact_id, event_id)).encode()
    return hashlib.blake2b(raw, digest_size=16).hexdigest()
