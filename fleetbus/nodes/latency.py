"""The latency monitor: measures the declared latency budgets of chains of nodes.

`fleetbus launch` adds it as `/latency` to a graph file that declares `latency_budgets:`
(see `fleetbus.launch.graph.LatencyBudget`). For each budget it pairs the messages of the
chain's first and last topic by their stamps (`fleetbus.bus.latency_chain`) and, every
report period, publishes the latency over the budget's window and over the whole run, and
warns when the window's p99 (or p50) first goes over the budget. It reads only the frame
header of those messages, whose source stamp is the message's own `header.stamp_ns`, so it
needs no message class and no decoding, whatever the chain carries.

Parameters: `budgets` (LatencyBudget mappings, topics already resolved; the graph loader
expands per-vehicle ones), `report_period_s` (wall seconds between reports).
Topics: every budget's `source` and `sink` in (any type); `/diagnostics` (a Diagnostic
`latency/<budget name>` per budget and report) and `/events` (Event `latency_budget`) out.
The last diagnostic of a run carries its totals (`run_p50_ms`, `run_p99_ms`, `run_max_ms`,
`run_samples`, `run_within_budget`); the node also logs them when it stops.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from fleetbus.bus.latency_chain import ChainLatency, LatencySummary, over_budget
from fleetbus.bus.node import Node
from fleetbus.bus.pubsub import AnyMessage
from fleetbus.bus.wire import FrameHeader
from fleetbus.launch.graph import LatencyBudget
from fleetbus.messages import Diagnostic, Event, Header


@dataclass
class _Chain:
    """One budget and what has been measured of it."""

    budget: LatencyBudget
    latency: ChainLatency
    violated: bool = False
    violations: int = 0

    def on_source(self, header: FrameHeader) -> None:
        self.latency.source(header.source_stamp_ns, header.publish_wall_ns,
                            time.monotonic_ns())

    def on_sink(self, header: FrameHeader) -> None:
        self.latency.sink(header.source_stamp_ns, header.publish_wall_ns, time.monotonic_ns())


class LatencyMonitor(Node):
    """Measures chain latencies against their budgets (see the module docstring)."""

    def setup(self) -> None:
        budgets = _budgets(self.param("budgets", [], "latency budgets: name, source, sink, "
                                      "p99_ms, p50_ms, window_s").value)
        period = self.param("report_period_s", 1.0, "wall seconds between reports").value
        self.diagnostics = self.publisher("/diagnostics", Diagnostic, depth=100)
        self.events = self.publisher("/events", Event, depth=100)
        self.chains = [_Chain(b, ChainLatency(b.window_s)) for b in budgets]
        routes: dict[str, list[Callable[[FrameHeader], None]]] = defaultdict(list)
        for chain in self.chains:  # one subscription per topic, however many chains use it
            routes[self.resolve(chain.budget.source)].append(chain.on_source)
            routes[self.resolve(chain.budget.sink)].append(chain.on_sink)
        for topic, handlers in routes.items():
            self.subscribe(topic, None, _fan_out(handlers))
        self.timer(period, self._report)

    def _report(self) -> None:
        now = time.monotonic_ns()
        for chain in self.chains:
            summary = chain.latency.summary(now)
            budget = chain.budget
            if summary.samples:  # an empty window proves neither breach nor recovery
                over = over_budget(summary.p50_ms, summary.p99_ms, budget.p99_ms,
                                   budget.p50_ms)
                if over and not chain.violated:
                    chain.violations += 1
                    self._warn(chain, summary)
                chain.violated = over
            self.diagnostics.publish(self._diagnostic(chain, summary))

    def _diagnostic(self, chain: _Chain, summary: LatencySummary) -> Diagnostic:
        budget = chain.budget
        if not summary.samples:
            level, text = "stale", (f"no {budget.source} -> {budget.sink} samples in the "
                                    f"last {budget.window_s:g} s")
        else:
            level = "warn" if chain.violated else "ok"
            text = (f"{budget.source} -> {budget.sink}: p99 {summary.p99_ms:.2f} ms, budget "
                    f"{budget.p99_ms:g} ms ({summary.samples} samples)")
        within = "unknown" if not summary.run_samples else str(not over_budget(
            summary.run_p50_ms, summary.run_p99_ms, budget.p99_ms, budget.p50_ms)).lower()
        values = {
            "source": budget.source, "sink": budget.sink, "window_s": f"{budget.window_s:g}",
            "p50_ms": _ms(summary.p50_ms), "p99_ms": _ms(summary.p99_ms),
            "max_ms": _ms(summary.max_ms), "samples": str(summary.samples),
            "budget_p99_ms": f"{budget.p99_ms:g}", "violations": str(chain.violations),
            "run_p50_ms": _ms(summary.run_p50_ms), "run_p99_ms": _ms(summary.run_p99_ms),
            "run_max_ms": _ms(summary.run_max_ms), "run_samples": str(summary.run_samples),
            "run_within_budget": within,
            "pending": str(summary.pending), "dropped": str(summary.dropped),
        }
        if budget.p50_ms is not None:
            values["budget_p50_ms"] = f"{budget.p50_ms:g}"
        return Diagnostic(header=Header(stamp_ns=self.now_ns()), name=f"latency/{budget.name}",
                          level=level, message=text, values=values)

    def _warn(self, chain: _Chain, summary: LatencySummary) -> None:
        budget = chain.budget
        figures = f"p99 {summary.p99_ms:.2f} ms (budget {budget.p99_ms:g} ms)"
        if budget.p50_ms is not None:
            figures += f", p50 {summary.p50_ms:.2f} ms (budget {budget.p50_ms:g} ms)"
        text = (f"latency budget {budget.name} exceeded: {budget.source} -> {budget.sink} "
                f"{figures} over the last {budget.window_s:g} s, {summary.samples} samples")
        self.log.warning("%s: %s", self.name, text)
        data = {"budget": budget.name, "source": budget.source, "sink": budget.sink,
                "p50_ms": _ms(summary.p50_ms), "p99_ms": _ms(summary.p99_ms),
                "budget_p99_ms": f"{budget.p99_ms:g}"}
        self.events.publish(Event(header=Header(stamp_ns=self.now_ns()), source=self.name,
                                  kind="latency_budget", severity="warn", message=text,
                                  data=data))

    def teardown(self) -> None:
        """The run's figures against each budget, in the log: what a report quotes."""
        now = time.monotonic_ns()
        for chain in self.chains:
            summary, budget = chain.latency.summary(now), chain.budget
            self.log.info("%s: %s (%s -> %s) over the run: p50 %s ms, p99 %s ms, max %s ms, "
                          "%d samples; budget p99 %g ms; %d violations", self.name,
                          budget.name, budget.source, budget.sink, _ms(summary.run_p50_ms),
                          _ms(summary.run_p99_ms), _ms(summary.run_max_ms),
                          summary.run_samples, budget.p99_ms, chain.violations)


def _budgets(raw: list) -> list[LatencyBudget]:
    """The `budgets` parameter checked; a bad one fails setup by name."""
    try:
        budgets = msgspec.convert(raw, list[LatencyBudget])
    except msgspec.ValidationError as exc:
        raise ValueError(f"latency: budgets: {exc}") from None
    names = [b.name for b in budgets]
    for budget in budgets:
        if budget.per_vehicle:
            raise ValueError(f"latency: budget {budget.name} is per_vehicle: the graph loader "
                             "expands those into one budget per vehicle")
        if names.count(budget.name) > 1:
            raise ValueError(f"latency: two budgets are named {budget.name}")
    return budgets


def _fan_out(handlers: list[Callable[[FrameHeader], None]]) -> Callable[[AnyMessage], None]:
    def deliver(msg: AnyMessage) -> None:
        for handler in handlers:
            handler(msg.header)

    return deliver


def _ms(value: float) -> str:
    return f"{value:.3f}" if math.isfinite(value) else "nan"
