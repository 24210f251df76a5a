"""Tracking tokens and HTML instrumentation (engine/tracking.py)."""

from __future__ import annotations

import pytest

from engine.errors import TokenInvalid
from engine.tracking import Hit, TrackingLinks
from engine.unsubscribe import UnsubscribeTokens

TOKENS = UnsubscribeTokens(b"s" * 32)


def links(opens: bool = True, clicks: bool = True) -> TrackingLinks:
    made = TrackingLinks.from_settings(TOKENS, "https://t.example/", opens=opens, clicks=clicks)
    assert made is not None
    return made


def test_off_by_default_means_no_links() -> None:
    assert (
        TrackingLinks.from_settings(TOKENS, "https://t.example", opens=False, clicks=False) is None
    )


def test_a_token_round_trips_and_any_change_is_refused() -> None:
    hit = Hit("c", "i1", "u1", "wf", "step", "https://shop.example/a?b=1")
    token = links().token(hit)
    assert links().verify(token, "c") == hit
    with pytest.raises(TokenInvalid, match="malformed"):
        links().verify(token, "o")  # a click token is no open token
    head, _, sig = token.partition(".")
    with pytest.raises(TokenInvalid, match="signature"):
        links().verify(f"{head[:-2]}xx.{sig}", "c")
    other = TrackingLinks(b"k" * 32, "https://t.example", opens=True, clicks=True)
    with pytest.raises(TokenInvalid, match="signature"):
        other.verify(token, "c")
    # An unsubscribe token of the same secret is not a tracking token.
    with pytest.raises(TokenInvalid):
        links().verify(TOKENS.make("u1", "u1@example.com"), "c")
    for bad in ("", ".", "abc", "a.b.c", "x" * 5000):
        with pytest.raises(TokenInvalid):
            links().verify(bad, "o")


def test_instrument_rewrites_web_links_but_not_unsubscribe_or_mailto() -> None:
    html = (
        '<html><body><a href="https://shop.example/x?a=1&amp;b=2">x</a>'
        '<a href="mailto:help@shop.example">m</a><a href="https://t.example/u/tok">u</a>'
        "</body></html>"
    )
    out = links().instrument(
        html, intent_id="i1", contact_id="u1", workflow_id="wf", step_id="s",
        keep=("https://t.example/u/tok",),
    )  # fmt: skip
    assert 'href="mailto:help@shop.example"' in out
    assert 'href="https://t.example/u/tok"' in out
    assert "shop.example/x" not in out.split("mailto")[0]
    assert out.index("/t/o/") < out.index("</body>")
    token = out.split("/t/c/")[1].split('"')[0]
    assert links().verify(token, "c").url == "https://shop.example/x?a=1&b=2"
    assert "/t/o/" not in links(opens=False).instrument(
        html, intent_id="i", contact_id="u", workflow_id="w", step_id="s"
    )
