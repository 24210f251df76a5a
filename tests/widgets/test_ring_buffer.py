"""RingBuffer: preallocated, wraps, reads in time order without copying."""

from __future__ import annotations

import numpy as np
import pytest

from widgets.ring_buffer import RingBuffer


def test_append_and_view_in_order() -> None:
    buf = RingBuffer(4)
    assert len(buf) == 0
    assert buf.latest() is None and buf.oldest() is None
    for i in range(3):
        buf.append(float(i), i * 10.0)
    t, v = buf.view()
    assert t.tolist() == [0.0, 1.0, 2.0]
    assert v.tolist() == [0.0, 10.0, 20.0]
    assert buf.latest() == (2.0, 20.0)
    assert buf.oldest() == (0.0, 0.0)


def test_wrap_keeps_the_newest_in_time_order() -> None:
    buf = RingBuffer(4)
    for i in range(10):
        buf.append(float(i), float(i))
    assert len(buf) == 4
    t, v = buf.view()
    assert t.tolist() == [6.0, 7.0, 8.0, 9.0]
    assert v.tolist() == [6.0, 7.0, 8.0, 9.0]
    assert buf.oldest() == (6.0, 6.0)


def test_view_is_a_read_only_view_not_a_copy() -> None:
    buf = RingBuffer(8)
    for i in range(11):  # wrapped: the double write keeps the view contiguous
        buf.append(float(i), float(i))
    t, v = buf.view()
    assert not t.flags.writeable and not v.flags.writeable
    assert not t.flags.owndata  # a view into the preallocated storage
    assert np.all(np.diff(t) > 0)
    with pytest.raises(ValueError):
        t[0] = 0.0


def test_storage_is_preallocated_once() -> None:
    buf = RingBuffer(16)
    storage = buf.view()[0].base
    for i in range(100):
        buf.append(float(i), 1.0)
    assert buf.view()[0].base is storage


def test_window_slice_with_padding() -> None:
    buf = RingBuffer(100)
    for i in range(50):
        buf.append(float(i), float(i) * 2)
    t, v = buf.window(10.0, 12.0)
    assert t.tolist() == [10.0, 11.0, 12.0]
    assert v.tolist() == [20.0, 22.0, 24.0]
    t, _ = buf.window(10.5, 12.5, pad=1)
    assert t.tolist() == [10.0, 11.0, 12.0, 13.0]
    t, _ = buf.window(45.0)
    assert t.tolist() == [45.0, 46.0, 47.0, 48.0, 49.0]
    t, _ = buf.window(100.0, 200.0)
    assert t.size == 0


def test_window_after_wrap() -> None:
    buf = RingBuffer(5)
    for i in range(12):
        buf.append(float(i), float(i))
    t, _ = buf.window(8.0, 10.0)
    assert t.tolist() == [8.0, 9.0, 10.0]
    t, _ = buf.window(0.0, 100.0)
    assert t.tolist() == [7.0, 8.0, 9.0, 10.0, 11.0]


def test_extend_in_bulk_and_beyond_capacity() -> None:
    buf = RingBuffer(5)
    buf.append(0.0, 0.0)
    buf.extend(np.arange(1.0, 4.0), np.arange(1.0, 4.0) * 10)
    assert buf.view()[1].tolist() == [0.0, 10.0, 20.0, 30.0]
    buf.extend(np.arange(4.0, 20.0), np.arange(4.0, 20.0))
    assert buf.view()[0].tolist() == [15.0, 16.0, 17.0, 18.0, 19.0]
    buf.append(20.0, 20.0)
    assert buf.view()[0].tolist() == [16.0, 17.0, 18.0, 19.0, 20.0]


def test_time_must_not_go_back() -> None:
    buf = RingBuffer(5)
    buf.append(10.0, 1.0)
    buf.append(10.0, 2.0)  # equal timestamps are fine
    with pytest.raises(ValueError):
        buf.append(9.0, 3.0)
    with pytest.raises(ValueError):
        buf.extend([11.0, 10.5], [1.0, 2.0])
    with pytest.raises(ValueError):
        buf.extend([1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        RingBuffer(0)


def test_lookups_for_change_and_hover() -> None:
    buf = RingBuffer(10)
    for t in (0.0, 10.0, 20.0, 30.0):
        buf.append(t, t / 10)
    assert buf.at_or_before(25.0) == (20.0, 2.0)
    assert buf.at_or_before(20.0) == (20.0, 2.0)
    assert buf.at_or_before(-1.0) is None
    assert buf.nearest(14.0) == (10.0, 1.0)
    assert buf.nearest(16.0) == (20.0, 2.0)
    assert buf.nearest(99.0) == (30.0, 3.0)
    assert buf.nearest(-99.0) == (0.0, 0.0)


def test_nan_values_mark_gaps() -> None:
    buf = RingBuffer(4)
    buf.append(0.0, 1.0)
    buf.append(1.0, float("nan"))
    assert np.isnan(buf.view()[1][1])


def test_clear() -> None:
    buf = RingBuffer(3)
    buf.append(1.0, 1.0)
    buf.clear()
    assert len(buf) == 0
    buf.append(0.0, 5.0)  # time may restart after a clear
    assert buf.latest() == (0.0, 5.0)
