"""What every node that serves one vehicle shares: its id and type parameters, reading its
estimate safely, and events about it."""

from __future__ import annotations

from collections.abc import Iterable

from fleetbus.bus.node import Node
from fleetbus.estimation import Estimate
from fleetbus.messages import Event, Header, Odometry
from fleetbus.nodes.conversions import estimate_from_odometry, is_finite


class VehicleNode(Node):
    """A node for one vehicle: call `vehicle_params` in setup() first."""

    def vehicle_params(self, role: str, kinds: Iterable[str]) -> None:
        """Read `vehicle_id` and `vehicle_type` (one of `kinds`) into self.vehicle and
        self.kind, and open the `/events` publisher; a bad pair fails setup by name."""
        kinds = list(kinds)
        self.vehicle = self.param("vehicle_id", "", f"the vehicle to {role}").value
        self.kind = self.param("vehicle_type", "", " | ".join(kinds)).value
        if not self.vehicle or self.kind not in kinds:
            raise ValueError(f"{self.name}: needs a vehicle_id and a vehicle_type of "
                             f"{', '.join(kinds)}, got {self.vehicle!r} and {self.kind!r}")
        self.events = self.publisher("/events", Event, depth=100)

    def read_estimate(self, msg: Odometry) -> Estimate | None:
        """The estimate in `msg`, or None (counted) when any of it is not finite: a node
        must never act on a NaN pose."""
        estimate = estimate_from_odometry(msg)
        if not is_finite(estimate):
            self._count("invalid_estimate", f"/{self.vehicle}/odometry is not finite")
            return None
        return estimate

    def take_estimate(self, msg: Odometry) -> Estimate | None:
        """`read_estimate`, kept as self.estimate; the first one is also self.home, where
        a return to launch goes (call `vehicle_params` first)."""
        estimate = self.read_estimate(msg)
        if estimate is not None:
            self.estimate = estimate
            if getattr(self, "home", None) is None:
                self.home = estimate.position.copy()
        return estimate

    def vehicle_event(self, kind: str, severity: str, message: str,
                      data: dict[str, str] | None = None) -> None:
        """An Event about this vehicle: the message starts with its name and the data
        always carries its id."""
        self.events.publish(Event(header=Header(stamp_ns=self.now_ns()), source=self.name,
                                  kind=kind, severity=severity,
                                  message=f"{self.vehicle}: {message}",
                                  data={"vehicle_id": self.vehicle, **(data or {})}))
