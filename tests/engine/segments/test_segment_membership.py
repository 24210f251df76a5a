"""Membership kept in the decide transaction, and by time alone (re-checks fired by the timer
service at the window edge), on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from engine.clock import ManualClock
from engine.ingest.validate import parse_event
from engine.segments.membership import SegmentIndex, SegmentRegistry
from engine.segments.model import SegmentInvalid
from engine.store import Store, schema
from engine.unsubscribes import record_unsubscribe
from tests.engine.segments.segments_support import SegmentRig, identify, segment, track

BROWSING = segment(
    "browsing-x",
    '`Product Viewed` where product_id = "X" at least once in the last 10 minutes'
    " and no `Order Completed` in the last 10 minutes",
)


def rig(store: Store, clock: ManualClock, *segments: object) -> SegmentRig:
    return SegmentRig(store, clock, SegmentRegistry(segments))  # type: ignore[arg-type]


def test_events_make_contacts_enter_and_exit_in_the_batch(
    any_store: Store, clock: ManualClock
) -> None:
    r = rig(any_store, clock, BROWSING)
    t0 = clock.now()
    out = r.decide(
        track(clock, "ann", "Product Viewed", product_id="X"),
        track(clock, "bob", "Product Viewed", product_id="Y"),
    )
    assert [(c.segment_id, c.contact_id, c.kind) for c in out.segment_changes] == [
        ("browsing-x", "ann", "entered")
    ]
    assert r.members("browsing-x") == ["ann"]
    clock.advance(60)
    r.decide(track(clock, "ann", "Order Completed", total=10))
    assert r.members("browsing-x") == []
    assert r.history("browsing-x") == [("ann", "entered", t0), ("ann", "exited", t0 + 60)]


def test_a_contact_leaves_when_the_window_passes_without_any_event(
    any_store: Store, clock: ManualClock
) -> None:
    r = rig(any_store, clock, BROWSING)
    t0 = clock.now()
    out = r.decide(track(clock, "ann", "Product Viewed", product_id="X"))
    assert out.next_timer_at == t0 + 600  # the timer service is woken for the window edge
    clock.advance(599)
    assert r.fire().segment_changes == []
    assert r.members("browsing-x") == ["ann"]
    clock.advance(1)
    fired = r.fire()
    assert [(c.contact_id, c.kind, c.at) for c in fired.segment_changes] == [
        ("ann", "exited", t0 + 600)
    ]
    assert r.members("browsing-x") == []
    assert fired.next_fire_at is None  # nothing left that time could change


def test_a_contact_enters_by_time_alone_when_a_blocking_event_ages_out(
    any_store: Store, clock: ManualClock
) -> None:
    waiting = segment(
        "added-no-recent-order",
        "`Product Added` at least once in the last 1 hour"
        " and no `Order Completed` in the last 10 minutes",
    )
    r = rig(any_store, clock, waiting)
    t0 = clock.now()
    r.decide(track(clock, "ann", "Order Completed"))
    clock.advance(30)
    r.decide(track(clock, "ann", "Product Added"))
    assert r.members("added-no-recent-order") == []
    clock.advance(570)  # t0 + 600: the order leaves its 10-minute window
    r.fire()
    assert r.members("added-no-recent-order") == ["ann"]
    clock.advance(3030)  # t0 + 30 + 3600: the add leaves its hour, out again without an event
    r.fire()
    assert r.history("added-no-recent-order") == [
        ("ann", "entered", t0 + 600),
        ("ann", "exited", t0 + 30 + 3600),
    ]


def test_date_traits_relative_to_now_flip_on_time(any_store: Store, clock: ManualClock) -> None:
    veteran = segment(
        "veteran", "trait signed_up_at before 30 days ago and subscribed to marketing"
    )
    r = rig(any_store, clock, veteran)
    signed = clock.now() - 29 * 86_400
    r.decide(identify(clock, "ann", signed_up_at=signed), identify(clock, "bob", plan="pro"))
    assert r.members("veteran") == []
    clock.advance(86_400)
    r.fire()
    assert r.members("veteran") == ["ann"]
    assert r.history("veteran") == [("ann", "entered", signed + 30 * 86_400)]


def test_segments_of_segments_follow_their_parts(any_store: Store, clock: ManualClock) -> None:
    pro_browsers = segment("pro-browsers", 'in segment browsing-x and trait plan = "pro"')
    r = rig(any_store, clock, pro_browsers, BROWSING)
    r.decide(identify(clock, "ann", plan="pro"), identify(clock, "bob", plan="free"))
    assert r.members("pro-browsers") == []
    r.decide(
        track(clock, "ann", "Product Viewed", product_id="X"),
        track(clock, "bob", "Product Viewed", product_id="X"),
    )
    assert r.members("pro-browsers") == ["ann"]
    clock.advance(600)
    r.fire()  # browsing-x ends by time, and pro-browsers with it
    assert r.members("browsing-x") == r.members("pro-browsers") == []


def test_a_new_contact_is_evaluated_against_every_segment(
    any_store: Store, clock: ManualClock
) -> None:
    no_plan = segment(
        "no-plan", "trait plan is missing and unsubscribed from marketing or trait plan is missing"
    )
    r = rig(any_store, clock, no_plan)
    r.decide(track(clock, "ann", "Page Viewed"))
    assert r.members("no-plan") == ["ann"]
    r.decide(track(clock, "ann", "Page Viewed"))  # not affected: nothing recorded twice
    r.decide(identify(clock, "ann", plan="pro"))
    assert r.history("no-plan") == [("ann", "entered", clock.now()), ("ann", "exited", clock.now())]


def test_replayed_events_change_no_membership(any_store: Store, clock: ManualClock) -> None:
    r = rig(any_store, clock, BROWSING)
    view = track(clock, "ann", "Product Viewed", product_id="X")
    r.decide(view)
    clock.advance(600)
    r.fire()
    assert r.decide(view).segment_changes == []  # a duplicate: skipped before any work
    assert [kind for _, kind, _ in r.history("browsing-x")] == ["entered", "exited"]


def test_only_the_segments_an_event_can_affect_are_evaluated() -> None:
    index = SegmentIndex.build(
        [
            BROWSING,
            segment("pro", 'trait plan = "pro"'),
            segment("pro-browsers", "in segment browsing-x and in segment pro"),
            segment("buyers", "`Order Completed` at least once in the last 7 days"),
        ]
    )
    data = {"type": "track", "userId": "u", "event": "Product Viewed", "messageId": "m"}
    assert index.affected_by(parse_event(data)) == {"browsing-x", "pro-browsers"}
    data = {"type": "identify", "userId": "u", "traits": {"plan": "x"}, "messageId": "m"}
    assert index.affected_by(parse_event(data)) == {"pro", "pro-browsers"}
    assert index.order.index("pro-browsers") > index.order.index("browsing-x")
    assert index.windows == {"Product Viewed": 600, "Order Completed": 7 * 86_400}


def test_cycles_and_unknown_references_are_refused() -> None:
    with pytest.raises(SegmentInvalid, match="cycle: a -> b -> c -> a"):
        SegmentIndex.build(
            [
                segment("a", "in segment b"),
                segment("b", "in segment c"),
                segment("c", "in segment a"),
            ]
        )
    with pytest.raises(SegmentInvalid, match="segment 'a' refers to segment 'zz', which does not"):
        SegmentIndex.build([segment("a", "in segment zz")])


def test_with_no_segments_the_batch_writes_no_segment_rows(
    store: Store, clock: ManualClock
) -> None:
    r = rig(store, clock)
    out = r.decide(track(clock, "ann", "Product Viewed", product_id="X"))
    assert out.segment_changes == [] and out.next_timer_at is None
    with store.begin() as conn:
        for table in (schema.segment_members, schema.segment_history, schema.segment_rechecks):
            assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() == 0


def test_an_unsubscribe_takes_the_contact_out_at_once(any_store: Store, clock: ManualClock) -> None:
    reachable = segment("reachable-pros", 'subscribed to marketing and trait plan = "pro"')
    lapsed = segment("lapsed", "in segment reachable-pros or unsubscribed from marketing")
    r = rig(any_store, clock, reachable, lapsed)
    r.decide(identify(clock, "ann", plan="pro", email="ann@example.com"))
    assert r.members("reachable-pros") == r.members("lapsed") == ["ann"]
    clock.advance(5)
    record_unsubscribe(any_store, "ann", "ann@example.com", "one-click", clock.now(), r.segments)
    assert r.members("reachable-pros") == []
    assert r.history("reachable-pros")[-1] == ("ann", "exited", clock.now())
    assert r.members("lapsed") == ["ann"]  # still in: now by the other branch


def test_a_rebuild_replaces_each_pending_recheck_page_by_page(
    any_store: Store, clock: ManualClock
) -> None:
    """An edited window segment rebuilt over the stored contacts: every contact ends with one
    re-check at the new window's edge, the segments that refer to it are re-evaluated too,
    and other segments' re-checks are left alone."""
    from engine.segments.build import SegmentBuilder

    pros_browsing = segment("pros-browsing", 'in segment browsing-x and trait plan = "pro"')
    other = segment("carted", "`Product Added` at least once in the last 1 hour")
    r = rig(any_store, clock, BROWSING, pros_browsing, other)
    t0 = clock.now()
    for user in ("ann", "bob", "cat", "dan", "eve"):
        r.decide(
            identify(clock, user, plan="pro"), track(clock, user, "Product Viewed", product_id="X")
        )
    r.decide(track(clock, "ann", "Product Added"))
    edited = segment(
        "browsing-x",
        '`Product Viewed` where product_id = "X" at least once in the last 30 minutes'
        " and no `Order Completed` in the last 30 minutes",
        version=2,
    )
    r.segments.add(edited)
    builder = SegmentBuilder(any_store, r.segments, clock, page=2)  # three pages
    after = None
    while True:
        after, _, _ = builder.evaluate_page("browsing-x", after)
        if after is None:
            break
    rc = schema.segment_rechecks
    with any_store.begin() as conn:
        rows = conn.execute(
            sa.select(rc.c.segment_id, rc.c.contact_id, rc.c.fire_at).order_by(
                rc.c.segment_id, rc.c.contact_id
            )
        ).all()
    browsing = [(c, f) for s, c, f in rows if s == "browsing-x"]
    assert browsing == [(u, t0 + 1800) for u in ("ann", "bob", "cat", "dan", "eve")]
    assert [(c, f) for s, c, f in rows if s == "carted"] == [("ann", t0 + 3600)]
    assert r.members("pros-browsing") == ["ann", "bob", "cat", "dan", "eve"]
