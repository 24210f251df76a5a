"""Fixtures for segment tests: a manual clock (segments are about time windows)."""

from __future__ import annotations

import pytest

from engine.clock import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()
