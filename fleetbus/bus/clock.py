"""The bus clock: wall time, or simulation time driven by ``/clock``.

Stamps (`now_ns`) and timers (`timer_ns`) follow the same clock. In wall mode, timers run
on the monotonic clock so that a wall-clock step (NTP) neither fires nor stalls them.
In sim mode both are the last `/clock` value, and time stands still until the simulator
publishes again — which is what makes lockstep runs reproducible.
"""

from __future__ import annotations

import time

CLOCK_TOPIC = "/clock"


class WallClock:
    is_sim = False

    def now_ns(self) -> int:
        return time.time_ns()

    def timer_ns(self) -> int:
        return time.monotonic_ns()


class SimClock(WallClock):
    is_sim = True

    def __init__(self) -> None:
        self._ns = 0

    def now_ns(self) -> int:
        return self._ns

    def timer_ns(self) -> int:
        return self._ns

    def set(self, stamp_ns: int) -> bool:
        """Advance to `stamp_ns`; returns False (and keeps time) if it would go back."""
        if stamp_ns < self._ns:
            return False
        self._ns = stamp_ns
        return True
