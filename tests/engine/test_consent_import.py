"""``campaign-engine import contacts.jsonl``: consent per purpose with its history."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa

from engine.commands import import_contacts
from engine.errors import ConfigError
from engine.store import Store, schema


def write(path: Path, *records: dict[str, object]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def test_import_sets_consent_and_records_history(store: Store, tmp_path: Path) -> None:
    first = write(
        tmp_path / "contacts.jsonl",
        {"id": "ann", "email": "ann@example.com", "consent": {"email_marketing": True}},
        {"id": "bob", "email": "bob@example.com"},
    )
    assert import_contacts(store, first) == 2
    later = {"location": {"granted": True, "at": 2_000_000_000, "method": "store_form"}}
    again = write(tmp_path / "contacts.jsonl", {"id": "ann", "consent": later})
    import_contacts(store, again)
    with store.begin() as conn:
        consent = conn.execute(
            sa.select(schema.contacts.c.consent).where(schema.contacts.c.id == "ann")
        ).scalar_one()
        h = schema.consent_history
        history = conn.execute(
            sa.select(h.c.contact_id, h.c.purpose, h.c.granted, h.c.method, h.c.source).order_by(
                h.c.id
            )
        ).all()
    # The second import adds a purpose and keeps the first.
    assert consent["email_marketing"]["granted"] is True
    assert consent["location"]["method"] == "store_form"
    assert [tuple(r) for r in history] == [
        ("ann", "email_marketing", True, "import", "import contacts.jsonl"),
        ("ann", "location", True, "store_form", "import contacts.jsonl"),
    ]


def test_bad_consent_in_an_import_changes_nothing(store: Store, tmp_path: Path) -> None:
    bad = write(
        tmp_path / "contacts.jsonl",
        {"id": "cy", "email": "cy@example.com"},
        {"id": "di", "email": "di@example.com", "consent": {"location": "yes"}},
    )
    with pytest.raises(ConfigError, match=r"contacts.jsonl:2: consent.location.granted must be"):
        import_contacts(store, bad)
    with store.begin() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.contacts)).scalar() == 0
