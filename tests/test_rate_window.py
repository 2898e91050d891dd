"""Topic rates from the counters, on a hand-driven clock: a slow topic reads its true rate
at every heartbeat, and a topic that stops reads zero once the window has passed."""

from __future__ import annotations

import pytest

from fleetbus.bus import pubsub
from fleetbus.bus.pubsub import RATE_WINDOW_S, _RateWindow


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _run(monkeypatch, period_s: float, until_s: float, stop_s: float = float("inf")
         ) -> list[tuple[float, float]]:
    """Messages every period_s until stop_s, a heartbeat every 0.5 s: (time, rate) read."""
    clock = Clock()
    monkeypatch.setattr(pubsub.time, "monotonic", clock)
    window = _RateWindow()
    start, readings, next_msg = clock.t, [], clock.t + 0.13
    for beat in range(1, int(until_s / 0.5) + 1):
        beat_t = start + beat * 0.5
        while next_msg <= beat_t and next_msg - start < stop_s:
            clock.t = next_msg
            window.count_one()
            window.bytes += 10
            next_msg += period_s
        clock.t = beat_t
        window.roll()
        readings.append((beat_t - start, window.rate_hz))
    return readings


@pytest.mark.parametrize("period_s", [1.0, 0.3, 2.0])
def test_a_slow_topic_reads_its_rate_at_every_heartbeat(monkeypatch, period_s):
    readings = _run(monkeypatch, period_s, 20.0)
    settled = [rate for t, rate in readings if t > 2 * period_s + 0.2]
    assert settled and all(rate == pytest.approx(1 / period_s) for rate in settled)


def test_a_topic_that_stops_reads_zero_once_its_last_message_left_the_window(monkeypatch):
    readings = _run(monkeypatch, 0.1, 20.0, stop_s=10.0)
    assert all(rate == pytest.approx(10.0) for t, rate in readings if 1.0 < t <= 10.0)
    assert all(rate == 0.0 for t, rate in readings if t > 10.0 + RATE_WINDOW_S + 0.5)


def test_a_topic_that_never_sent_reads_zero(monkeypatch):
    assert all(rate == 0.0 for _, rate in _run(monkeypatch, 1.0, 5.0, stop_s=0.0))
