"""Periodic timers on the bus clock."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any


class Timer:
    """A periodic callback. `cancel()` stops it; `overruns` counts periods that were
    skipped because a callback (or a sim-clock jump) ran past the next deadline."""

    def __init__(self, period_s: float, callback: Callable[[], Any], start_ns: int) -> None:
        if not period_s > 0:
            raise ValueError(f"timer period must be positive, got {period_s!r}")
        self.period_ns = int(period_s * 1e9)
        self.callback = callback
        self.next_ns = start_ns + self.period_ns
        self.cancelled = False
        self.overruns = 0

    def cancel(self) -> None:
        self.cancelled = True


class TimerQueue:
    def __init__(self) -> None:
        self._heap: list[tuple[int, int, Timer]] = []
        self._order = itertools.count()

    def add(self, timer: Timer) -> Timer:
        heapq.heappush(self._heap, (timer.next_ns, next(self._order), timer))
        return timer

    def next_deadline(self) -> int | None:
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now_ns: int) -> list[Timer]:
        """Timers due at `now_ns`, each rescheduled one period on (or, if it fell more
        than a period behind, one period after now)."""
        due = []
        while self._heap and self._heap[0][0] <= now_ns:
            _, _, timer = heapq.heappop(self._heap)
            if timer.cancelled:
                continue
            due.append(timer)
            timer.next_ns += timer.period_ns
            if timer.next_ns <= now_ns:
                skipped = (now_ns - timer.next_ns) // timer.period_ns + 1
                timer.overruns += skipped
                timer.next_ns += skipped * timer.period_ns
            heapq.heappush(self._heap, (timer.next_ns, next(self._order), timer))
        return due
