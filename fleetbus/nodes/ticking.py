"""The periodic step of a vehicle node, driven by its estimates rather than its clock.

With `trigger: clock` the step runs on the node's timer, at the node's time. With
`trigger: estimate` it runs once per period on the first estimate at or after the
period's start, at the estimate's stamp, and only once every awaited input (another
node's output for the same instant, e.g. the geofence guard's status) has arrived with a
stamp at or after it; while the estimator is not ready, on its `odometry_unready` notes.
A lockstep run is then exactly repeatable: each step sees the same inputs, whichever of
the vehicle's nodes and sockets happened to run first. When the estimator falls silent,
the clock still steps the node once a period has passed, so that it can say why it is
not acting.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fleetbus.bus.node import Node
from fleetbus.messages import Diagnostic

TRIGGERS = ("clock", "estimate")
# Periods without an estimate before the clock steps the node. More than one: a node
# stepping faster than the simulator's lockstep sees whole steps without an estimate.
SILENT_PERIODS = 3


class StepTicker:
    def __init__(self, node: Node, rate_hz: float, step: Callable[[int], None],
                 trigger: str = "clock", awaited: Sequence[str] = ()) -> None:
        if trigger not in TRIGGERS:
            raise ValueError(f"{node.name}: trigger must be clock or estimate, got {trigger!r}")
        self.node, self.step, self.trigger = node, step, trigger
        self.period_ns = round(1e9 / rate_hz)
        self.next_ns = -1  # the first estimate at or after this starts a step
        self.pending_ns: int | None = None  # a step waiting for its awaited inputs
        self.latest = dict.fromkeys(awaited, -1)  # awaited input -> newest stamp, ns
        node.timer(1.0 / rate_hz, self._on_clock)
        if trigger == "estimate":
            vehicle = getattr(node, "vehicle", "")
            node.subscribe(f"/{vehicle}/odometry_unready", Diagnostic,
                           lambda msg: self.unready(msg.header.stamp_ns))

    @classmethod
    def from_params(cls, node: Node, rate_hz: float, step: Callable[[int], None],
                    can_await: Sequence[str] = ()) -> StepTicker:
        """A ticker set by the node's `trigger` parameter and, if it can await any of
        `can_await`, its `await` parameter (refused by name when it lists another)."""
        trigger = node.param("trigger", "clock", "clock: step on the node's clock | "
                             "estimate: on the first estimate of each period").value
        awaited = node.param("await", [], f"inputs a step waits for at its stamp, of "
                             f"{', '.join(can_await)}").value if can_await else []
        unknown = sorted(set(awaited) - set(can_await))
        if unknown:
            raise ValueError(f"{node.name}: cannot await {unknown} (only "
                             f"{', '.join(can_await)})")
        return cls(node, rate_hz, step, trigger, awaited)

    def estimate(self, stamp_ns: int) -> None:
        """An estimate stamped `stamp_ns` arrived (call it from the odometry callback)."""
        if self.trigger == "estimate" and stamp_ns >= self.next_ns:
            self.next_ns = (stamp_ns // self.period_ns + 1) * self.period_ns
            self.pending_ns = stamp_ns
            self.retry()

    def unready(self, stamp_ns: int) -> None:
        """The estimator has no estimate for `stamp_ns` (not ready yet): step without one,
        and without awaiting inputs that only an estimate brings about."""
        if stamp_ns >= self.next_ns:
            self.next_ns = (stamp_ns // self.period_ns + 1) * self.period_ns
            self.step(stamp_ns)

    def arrived(self, name: str, stamp_ns: int) -> None:
        """An input stamped `stamp_ns` arrived (ignored unless it is awaited)."""
        if name in self.latest:
            self.latest[name] = max(self.latest[name], stamp_ns)
            self.retry()

    def retry(self) -> None:
        """Run the pending step if nothing it awaits is missing (also call it when a
        condition of the node's own, checked in the step, may have changed)."""
        stamp = self.pending_ns
        if stamp is not None and all(t >= stamp for t in self.latest.values()):
            self.pending_ns = None
            self.step(stamp)

    def hold(self, stamp_ns: int) -> None:
        """The step at `stamp_ns` cannot run yet for a reason of the node's own: keep it
        pending until `retry`."""
        self.pending_ns = stamp_ns

    def waiting_for(self) -> list[str]:
        stamp = self.pending_ns
        return [] if stamp is None else [n for n, t in self.latest.items() if t < stamp]

    def _on_clock(self) -> None:
        now = self.node.now_ns()
        if self.trigger == "clock":
            self.step(now)
        elif self.pending_ns is None and now >= self.next_ns + SILENT_PERIODS * self.period_ns:
            # the estimator silent for several periods (gone?): step to say so
            self.next_ns = (now // self.period_ns + 1) * self.period_ns
            self.step(now)
        elif self.pending_ns is not None and now >= self.pending_ns + self.period_ns:
            # an awaited input is a period late (its node gone?): step without it
            self.node._count("awaited_late", f"{self.node.name}: stepping at "
                             f"{self.pending_ns * 1e-9:.3f} s without "
                             f"{', '.join(self.waiting_for())}")
            stamp, self.pending_ns = self.pending_ns, None
            self.step(stamp)
