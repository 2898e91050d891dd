"""Events about one vehicle, published the same way by every node that raises them."""

from __future__ import annotations

from fleetbus.bus.node import Node
from fleetbus.bus.pubsub import Publisher
from fleetbus.messages import Event, Header


def vehicle_event(node: Node, events: Publisher[Event], vehicle_id: str, kind: str,
                  severity: str, message: str, data: dict[str, str] | None = None) -> None:
    """Publish an Event from `node` about `vehicle_id`; the message starts with the
    vehicle's name and the data always carries its id."""
    events.publish(Event(header=Header(stamp_ns=node.now_ns()), source=node.name, kind=kind,
                         severity=severity, message=f"{vehicle_id}: {message}",
                         data={"vehicle_id": vehicle_id, **(data or {})}))
