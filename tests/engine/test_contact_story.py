"""The contact view's story of an enrollment reads only that contact's rows."""

from __future__ import annotations

from typing import Any

from engine.contact_story import enrollments
from engine.store import Store, schema
from tests.engine.sqlite_support import plan, traced


def _intent(n: int, contact: str, enrollment: str) -> dict[str, Any]:
    return {
        "id": f"i{n}", "dedup_key": f"k{n}", "workflow_id": "welcome", "workflow_version": 1,
        "step_id": "hello", "enrollment_id": enrollment, "contact_id": contact,
        "event_id": f"ev{n}", "template_id": "welcome", "route": "default",
        "category": "marketing", "to_addr": f"{contact}@example.com", "domain": "example.com",
        "context": {}, "status": "sent", "attempts": 1, "next_attempt_at": 1.0,
        "received_at": 1.0, "decided_at": 1.0 + n, "accepted_at": 2.0 + n,
    }  # fmt: skip


def test_a_contacts_story_looks_its_mails_up_by_contact(store: Store) -> None:
    people = ["ada", "bob", "cy"]
    with store.begin() as conn:
        conn.execute(
            schema.enrollments.insert(),
            [
                {"id": f"e-{who}", "workflow_id": "welcome", "workflow_version": 1,
                 "contact_id": who, "trigger_event_id": f"t-{who}",
                 "trigger": {"name": "Signed Up"}, "state": "completed", "entered_at": 1.0,
                 "updated_at": 1.0}
                for who in people
            ],
        )  # fmt: skip
        conn.execute(
            schema.intents.insert(),
            [_intent(n, people[n % 3], f"e-{people[n % 3]}") for n in range(30)],
        )
    with store.begin() as conn:
        with traced(conn) as seen:
            story = enrollments(conn, "bob", {}, limit=10)
        (mails,) = [s for s in seen if "FROM intents" in s]
        steps = plan(conn, mails)
    assert not any(step.startswith("SCAN intents") for step in steps), steps
    assert any("ix_intents_contact" in step for step in steps), steps
    (bob,) = story
    sent = [d["intent"] for d in bob["decisions"] if d.get("intent")]
    assert sorted(sent, key=lambda x: int(x[1:])) == [f"i{n}" for n in range(1, 30, 3)]
