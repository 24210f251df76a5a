"""A preallocated (timestamp, value) ring buffer for live series.

Data arrival only writes into numpy arrays allocated once; nothing grows while the console runs.
Each sample is written twice, at ``i`` and ``i + capacity``, so the samples in time order are
always one contiguous slice: reading the series (every redraw) costs no copy and no
``np.concatenate`` (the trick pyqtgraph's ``scrollingPlots.py`` approximates by shifting arrays).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


class RingBuffer:
    """The last ``capacity`` samples of a series, timestamps non-decreasing (epoch seconds).

    Values may be NaN to mark a gap. Arrays returned by ``view``/``window`` are read-only views
    into the buffer: later appends overwrite them, so copy what you keep.
    """

    __slots__ = ("_capacity", "_next", "_size", "_t", "_v")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        self._capacity = capacity
        self._t: FloatArray = np.full(2 * capacity, np.nan)
        self._v: FloatArray = np.full(2 * capacity, np.nan)
        self._next = 0  # where the next sample goes, in [0, capacity)
        self._size = 0

    @property
    def capacity(self) -> int:
        """How many samples are kept."""
        return self._capacity

    def __len__(self) -> int:
        return self._size

    def clear(self) -> None:
        """Forget every sample (the arrays stay allocated)."""
        self._next = 0
        self._size = 0

    def append(self, t: float, value: float) -> None:
        """Add one sample; ``t`` must not be earlier than the latest sample's."""
        if self._size and t < self._t[self._start() + self._size - 1]:
            raise ValueError(f"sample at {t} is older than the latest one; times must not go back")
        i = self._next
        cap = self._capacity
        self._t[i] = self._t[i + cap] = t
        self._v[i] = self._v[i + cap] = value
        self._next = (i + 1) % cap
        self._size = min(self._size + 1, cap)

    def extend(self, ts: npt.ArrayLike, values: npt.ArrayLike) -> None:
        """Add many samples at once (e.g. history fetched on connect), oldest first."""
        t_arr = np.asarray(ts, dtype=np.float64).ravel()
        v_arr = np.asarray(values, dtype=np.float64).ravel()
        if t_arr.shape != v_arr.shape:
            raise ValueError("timestamps and values differ in length")
        if not t_arr.size:
            return
        latest = self._t[self._start() + self._size - 1] if self._size else -np.inf
        if np.any(np.diff(t_arr) < 0) or t_arr[0] < latest:
            raise ValueError("timestamps must not go back")
        cap = self._capacity
        if t_arr.size > cap:
            t_arr, v_arr = t_arr[-cap:], v_arr[-cap:]
        index = (self._next + np.arange(t_arr.size)) % cap
        self._t[index] = self._t[index + cap] = t_arr
        self._v[index] = self._v[index + cap] = v_arr
        self._next = int((self._next + t_arr.size) % cap)
        self._size = min(self._size + int(t_arr.size), cap)

    def _start(self) -> int:
        return (self._next - self._size) % self._capacity

    def view(self) -> tuple[FloatArray, FloatArray]:
        """All samples in time order, as read-only views (no copy)."""
        start = self._start()
        t = self._t[start : start + self._size]
        v = self._v[start : start + self._size]
        t.flags.writeable = False
        v.flags.writeable = False
        return t, v

    def window(
        self, t0: float, t1: float | None = None, *, pad: int = 0
    ) -> tuple[FloatArray, FloatArray]:
        """Samples with ``t0 <= t <= t1`` (``t1=None``: up to the latest), as read-only views.

        ``pad`` extra samples are included on each side, so a line drawn from them reaches the
        edges of the window instead of stopping short.
        """
        t, v = self.view()
        lo = int(np.searchsorted(t, t0, side="left"))
        hi = self._size if t1 is None else int(np.searchsorted(t, t1, side="right"))
        lo = max(lo - pad, 0)
        hi = min(hi + pad, self._size)
        return t[lo:hi], v[lo:hi]

    def latest(self) -> tuple[float, float] | None:
        """The newest ``(t, value)``, or None when empty."""
        if not self._size:
            return None
        i = self._start() + self._size - 1
        return float(self._t[i]), float(self._v[i])

    def oldest(self) -> tuple[float, float] | None:
        """The oldest ``(t, value)`` still kept, or None when empty."""
        if not self._size:
            return None
        i = self._start()
        return float(self._t[i]), float(self._v[i])

    def at_or_before(self, t: float) -> tuple[float, float] | None:
        """The newest sample taken at or before ``t``, or None if every sample is later."""
        times, values = self.view()
        i = int(np.searchsorted(times, t, side="right")) - 1
        if i < 0:
            return None
        return float(times[i]), float(values[i])

    def nearest(self, t: float) -> tuple[float, float] | None:
        """The sample closest in time to ``t`` (for a hover readout), or None when empty."""
        if not self._size:
            return None
        times, values = self.view()
        i = int(np.searchsorted(times, t))
        if i >= self._size or (i > 0 and t - times[i - 1] <= times[i] - t):
            i -= 1
        return float(times[i]), float(values[i])
