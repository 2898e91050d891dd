"""The latency of a chain of nodes, told from the stamps of its first and last topics.

A chain sample pairs a message on the chain's source topic, stamped t, with the first
message on its sink topic stamped at or after t: in lockstep simulation an IMU sample
and the command for the same instant carry the same sim stamp, so the pair spans
IMU -> fusion -> controller -> command, whatever runs in between. The latency is the
difference of the two publish times (the wall clock every frame header carries), so
neither the transport to the monitor nor how busy the monitor is enters the figure, and
a sink that reaches the monitor before its source still pairs up.

Pure bookkeeping on integers (no sockets): `fleetbus.nodes.latency` feeds it from the bus
and tests feed it by hand.
"""

from __future__ import annotations

import collections
import heapq
import math
from dataclasses import dataclass

import numpy as np

MAX_PENDING = 10_000
"""Sources waiting for an answer; beyond this the oldest is dropped and counted, so a
sink that stops answering cannot grow memory (25 s of a 400 Hz IMU)."""
MAX_WINDOW = 50_000
"""Samples kept for the sliding window, whatever its length."""
RECENT_SINKS = 32
"""Sinks remembered for sources that arrive after their answer."""
BIN_RATIO = 1.01
"""Run totals are kept in log bins this wide: percentiles within 0.5 %, in bounded
memory however long the run."""
SMALLEST_NS = 1_000  # the first bin holds everything up to 1 us


@dataclass(frozen=True)
class LatencySummary:
    """Percentiles in ms over the sliding window (NaN when it is empty) and the run."""

    p50_ms: float
    p99_ms: float
    max_ms: float
    samples: int
    run_p50_ms: float
    run_p99_ms: float
    run_max_ms: float
    run_samples: int
    pending: int
    dropped: int


class LatencyHistogram:
    """All samples of a run in logarithmic bins: constant memory, approximate
    percentiles (the exact maximum is kept aside)."""

    def __init__(self) -> None:
        self.bins: collections.Counter[int] = collections.Counter()
        self.count = 0
        self.max_ns = 0

    def add(self, latency_ns: int) -> None:
        self.bins[_bin(latency_ns)] += 1
        self.count += 1
        self.max_ns = max(self.max_ns, latency_ns)

    def percentile_ns(self, pct: float) -> float:
        """The `pct` percentile (nearest rank), at its bin's geometric middle, never above
        the maximum; NaN when empty."""
        if not self.count:
            return math.nan
        rank = max(1, math.ceil(pct / 100 * self.count))
        seen = 0
        for index in sorted(self.bins):
            seen += self.bins[index]
            if seen >= rank:
                return min(_bin_middle(index), float(self.max_ns))
        return float(self.max_ns)


def _bin(latency_ns: int) -> int:
    if latency_ns <= SMALLEST_NS:
        return 0
    return 1 + int(math.log(latency_ns / SMALLEST_NS) / math.log(BIN_RATIO))


def _bin_middle(index: int) -> float:
    if index == 0:
        return SMALLEST_NS / 2
    return SMALLEST_NS * BIN_RATIO ** (index - 0.5)


class ChainLatency:
    """Pairs source and sink messages of one chain and keeps their latencies.

    Feed `source` and `sink` with each message's stamp and publish time (ns) and the
    caller's monotonic `now_ns`; `summary(now_ns)` tells the window and the run. Sources
    are only counted once the sink has spoken: a controller still building its solver
    must not enter the run as one huge sample. After that, a source stays pending until
    a sink answers it, however late (a stalled chain is latency too).
    """

    def __init__(self, window_s: float, max_pending: int = MAX_PENDING,
                 max_window: int = MAX_WINDOW) -> None:
        if not window_s > 0:
            raise ValueError(f"latency window must be positive, got {window_s!r}")
        self.window_ns = int(window_s * 1e9)
        self.max_pending = max_pending
        self.dropped = 0
        self.run = LatencyHistogram()
        self._pending: list[tuple[int, int]] = []  # heap of (stamp, sent) waiting for a sink
        self._recent: collections.deque[tuple[int, int]] = collections.deque(
            maxlen=RECENT_SINKS)  # (stamp, sent) of the last sinks
        self._newest_sink = -1  # highest sink stamp so far; -1 before the first
        self._window: collections.deque[tuple[int, int]] = collections.deque(
            maxlen=max_window)  # (now, latency)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def source(self, stamp_ns: int, sent_ns: int, now_ns: int) -> None:
        if self._newest_sink < 0:
            return  # the chain has not answered yet: not measuring
        if stamp_ns <= self._newest_sink:  # rare: its answer may already be here
            answer = self._early_answer(stamp_ns, sent_ns)
            if answer is not None:
                self._add(answer - sent_ns, now_ns)
                return
        heapq.heappush(self._pending, (stamp_ns, sent_ns))
        if len(self._pending) > self.max_pending:
            heapq.heappop(self._pending)  # the lowest stamp: the longest unanswered
            self.dropped += 1

    def sink(self, stamp_ns: int, sent_ns: int, now_ns: int) -> None:
        """Answer every pending source stamped at or before this one and sent before it."""
        self._recent.append((stamp_ns, sent_ns))
        self._newest_sink = max(self._newest_sink, stamp_ns)
        later: list[tuple[int, int]] = []  # stamped earlier but sent after this sink
        while self._pending and self._pending[0][0] <= stamp_ns:
            source = heapq.heappop(self._pending)
            if source[1] <= sent_ns:
                self._add(sent_ns - source[1], now_ns)
            else:
                later.append(source)
        for source in later:
            heapq.heappush(self._pending, source)

    def _early_answer(self, stamp_ns: int, sent_ns: int) -> int | None:
        """The publish time of the first remembered sink that answers this source."""
        answers = [sent for stamp, sent in self._recent if stamp >= stamp_ns and sent >= sent_ns]
        return min(answers, default=None)

    def _add(self, latency_ns: int, now_ns: int) -> None:
        self._window.append((now_ns, latency_ns))
        self.run.add(latency_ns)

    def summary(self, now_ns: int) -> LatencySummary:
        window = self._window
        while window and window[0][0] < now_ns - self.window_ns:
            window.popleft()
        if window:
            ms = np.fromiter((latency for _, latency in window), float, len(window)) / 1e6
            p50, p99 = np.percentile(ms, [50, 99]).tolist()
            peak = float(ms.max())
        else:
            p50 = p99 = peak = math.nan
        run = self.run
        return LatencySummary(
            p50_ms=p50, p99_ms=p99, max_ms=peak, samples=len(window),
            run_p50_ms=run.percentile_ns(50) / 1e6, run_p99_ms=run.percentile_ns(99) / 1e6,
            run_max_ms=run.max_ns / 1e6 if run.count else math.nan, run_samples=run.count,
            pending=self.pending, dropped=self.dropped)


def over_budget(p50_ms: float, p99_ms: float, budget_p99_ms: float,
                budget_p50_ms: float | None) -> bool:
    """Whether measured percentiles break a budget (NaN, no samples, breaks nothing)."""
    if p99_ms > budget_p99_ms:
        return True
    return budget_p50_ms is not None and p50_ms > budget_p50_ms
