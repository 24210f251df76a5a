"""Quiet hours in the contact's own timezone, across midnight and daylight saving changes."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from engine.config import load_settings
from engine.errors import ConfigError
from engine.pacing.policy import Pacing, cap_keys, quiet_until
from engine.pacing.quiet import QuietHours

NY = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")


def at(zone: ZoneInfo, *parts: int) -> float:
    return datetime(*parts, tzinfo=zone).timestamp()  # type: ignore[misc]


def test_a_send_outside_the_window_keeps_its_time() -> None:
    quiet = QuietHours.parse("21:00-08:00")
    noon = at(BERLIN, 2027, 1, 15, 12, 0)
    assert quiet.next_allowed(noon, BERLIN) == noon
    eight = at(BERLIN, 2027, 1, 15, 8, 0)  # the end is not quiet any more
    assert quiet.next_allowed(eight, BERLIN) == eight


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        ((2027, 1, 15, 21, 0), (2027, 1, 16, 8, 0)),  # the window's first minute
        ((2027, 1, 15, 23, 30), (2027, 1, 16, 8, 0)),  # evening: tomorrow morning
        ((2027, 1, 16, 3, 0), (2027, 1, 16, 8, 0)),  # after midnight: this morning
        ((2027, 1, 16, 7, 59), (2027, 1, 16, 8, 0)),
    ],
)
def test_a_send_in_the_window_waits_for_its_end(
    local: tuple[int, ...], expected: tuple[int, ...]
) -> None:
    quiet = QuietHours.parse("21:00-08:00")
    assert quiet.next_allowed(at(BERLIN, *local), BERLIN) == at(BERLIN, *expected)


def test_a_window_within_one_day() -> None:
    quiet = QuietHours.parse("12:00-14:00")
    assert quiet.next_allowed(at(BERLIN, 2027, 1, 15, 13, 0), BERLIN) == at(
        BERLIN, 2027, 1, 15, 14, 0
    )
    assert not quiet.quiet_at(at(BERLIN, 2027, 1, 15, 14, 0), BERLIN)


def test_the_night_the_clocks_go_back_is_an_hour_longer() -> None:
    # New York leaves daylight saving time on 2027-11-07 at 02:00 (back to 01:00).
    quiet = QuietHours.parse("21:00-08:00")
    evening = at(NY, 2027, 11, 6, 22, 0)
    allowed = quiet.next_allowed(evening, NY)
    assert datetime.fromtimestamp(allowed, NY).strftime("%Y-%m-%d %H:%M %Z") == (
        "2027-11-07 08:00 EST"
    )
    assert allowed - evening == 11 * 3600


def test_the_night_the_clocks_go_forward_is_an_hour_shorter() -> None:
    # Berlin starts summer time on 2027-03-28 at 02:00 (on to 03:00).
    quiet = QuietHours.parse("21:00-08:00")
    evening = at(BERLIN, 2027, 3, 27, 22, 0)
    assert quiet.next_allowed(evening, BERLIN) - evening == 9 * 3600


def test_an_end_in_the_skipped_hour_is_the_moment_the_clocks_jump() -> None:
    quiet = QuietHours.parse("23:00-02:30")
    night = at(BERLIN, 2027, 3, 28, 0, 30)
    allowed = quiet.next_allowed(night, BERLIN)
    assert allowed == datetime(2027, 3, 28, 1, 0, tzinfo=UTC).timestamp()  # 03:00 CEST
    assert not quiet.quiet_at(allowed, BERLIN)
    assert quiet.quiet_at(allowed - 1, BERLIN)


@pytest.mark.parametrize("text", ["21-08", "25:00-08:00", "21:00-21:00", "21:00", "", "9pm-8am"])
def test_bad_windows_are_refused_with_the_reason(text: str) -> None:
    with pytest.raises(ValueError, match="quiet hours"):
        QuietHours.parse(text)


def test_settings_check_the_window_and_the_fallback_zone() -> None:
    with pytest.raises(ConfigError, match=r"quiet\.hours"):
        load_settings(environ={"CAMPAIGN_QUIET_HOURS": "late-early"})
    with pytest.raises(ConfigError, match=r"quiet\.timezone: not an IANA timezone"):
        load_settings(environ={"CAMPAIGN_QUIET_TIMEZONE": "Mars/Olympus"})
    with pytest.raises(ConfigError, match=r"caps\.per_day"):
        load_settings(environ={"CAMPAIGN_CAPS_PER_DAY": "-1"})
    settings = load_settings(
        environ={"CAMPAIGN_CAPS_PER_DAY": "2", "CAMPAIGN_QUIET_HOURS": "21:00-08:00"}
    )
    pacing = Pacing.from_settings(settings)
    assert (pacing.per_day, str(pacing.quiet), pacing.zone_name) == (2, "21:00-08:00", "UTC")


def intent(category: str, t: float) -> dict[str, object]:
    return {"category": category, "next_attempt_at": t, "expires_at": t + 3600, "context": {}}


def test_plan_defers_marketing_and_moves_its_expiry_with_it() -> None:
    pacing = Pacing(quiet=QuietHours.parse("21:00-08:00"), zone_name="Europe/Berlin")
    night = at(NY, 2027, 1, 15, 23, 0)
    row = intent("marketing", night)
    note = pacing.plan(row, priority=80, quiet_hours="default", timezone="America/New_York")
    morning = at(NY, 2027, 1, 16, 8, 0)
    assert row["next_attempt_at"] == morning
    assert row["expires_at"] == morning + 3600
    assert note == "quiet hours 21:00-08:00 (America/New_York): deferred to 2027-01-16 08:00 EST"
    # Counted on the local day it goes out, in the contact's zone.
    assert (row["cap_day"], row["cap_week"], row["priority"]) == ("2027-01-16", "2027-W02", 80)


def test_plan_falls_back_to_the_setting_zone_and_exempts_transactional() -> None:
    pacing = Pacing(quiet=QuietHours.parse("21:00-08:00"), zone_name="Europe/Berlin")
    late = at(BERLIN, 2027, 1, 15, 22, 0)
    row = intent("marketing", late)
    pacing.plan(row, priority=50, quiet_hours="default", timezone="Not/AZone")
    assert row["next_attempt_at"] == at(BERLIN, 2027, 1, 16, 8, 0)
    order = intent("transactional", late)
    assert pacing.plan(order, priority=50, quiet_hours="default", timezone=None) is None
    assert order["next_attempt_at"] == late and order["cap_day"] is None
    # A workflow's own window applies to transactional mail too; "none" to nothing.
    own = intent("transactional", late)
    pacing.plan(own, priority=50, quiet_hours="21:30-07:00", timezone="Europe/Berlin")
    assert own["next_attempt_at"] == at(BERLIN, 2027, 1, 16, 7, 0)
    never = intent("marketing", late)
    pacing.plan(never, priority=50, quiet_hours="none", timezone="Europe/Berlin")
    assert never["next_attempt_at"] == late


def test_the_deliver_stage_holds_a_retry_that_lands_in_quiet_hours() -> None:
    context = {"quiet_hours": {"hours": "21:00-08:00", "timezone": "Europe/Berlin"}}
    held = quiet_until(context, at(BERLIN, 2027, 1, 15, 23, 0))
    assert held is not None
    assert held[0] == at(BERLIN, 2027, 1, 16, 8, 0)
    assert "held until 2027-01-16 08:00 CET" in held[1]
    assert quiet_until(context, at(BERLIN, 2027, 1, 16, 9, 0)) is None
    assert quiet_until({}, at(BERLIN, 2027, 1, 15, 23, 0)) is None


def test_cap_keys_follow_the_local_calendar() -> None:
    # 2027-01-17 23:30 in New York is already Monday 2027-01-18 in UTC.
    t = at(NY, 2027, 1, 17, 23, 30)
    assert cap_keys(t, NY) == ("2027-01-17", "2027-W02")
    assert cap_keys(t, ZoneInfo("UTC")) == ("2027-01-18", "2027-W03")
