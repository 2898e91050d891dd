"""fleetbus: event-driven autonomy middleware for drones, ships and ground vehicles.

The public API: subclass `Node`, declare publishers, subscriptions, timers, services and
parameters in `setup()`, and run it with `run()` (or `start()` from tests and notebooks);
describe a whole multi-process graph with `Graph` (or a YAML file) and `Graph.launch()` it.
"""

from fleetbus.bus.config import BusConfig
from fleetbus.bus.node import Node, NodeSetupError
from fleetbus.bus.params import Param, ParamError
from fleetbus.bus.pubsub import Publisher, Subscription
from fleetbus.bus.registry import Registry
from fleetbus.bus.runner import Running, run, start
from fleetbus.bus.services import ServiceError, ServiceFailed, ServiceNotFound, ServiceTimeout
from fleetbus.launch.graph import Graph
from fleetbus.messages.base import Message

__version__ = "0.1.0"

__all__ = [
    "BusConfig",
    "Graph",
    "Message",
    "Node",
    "NodeSetupError",
    "Param",
    "ParamError",
    "Publisher",
    "Registry",
    "Running",
    "ServiceError",
    "ServiceFailed",
    "ServiceNotFound",
    "ServiceTimeout",
    "Subscription",
    "run",
    "start",
]
