"""Fixtures for widget tests (helpers live in widget_helpers.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["light", "dark"])
def scheme(request: pytest.FixtureRequest) -> str:
    """Run the test once on a light palette and once on a dark one."""
    return str(request.param)
