"""Fixtures for catalog tests: a manual clock (lookbacks and windows are about time)."""

from __future__ import annotations

import pytest

from engine.clock import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()
