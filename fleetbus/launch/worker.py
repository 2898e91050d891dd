"""The process `fleetbus launch` starts for Python node classes: one or more nodes of a
process group, sharing one ZeroMQ context (inproc between them).

    python -m fleetbus.launch.worker '<JSON list of NodeSpec>'

Exit status: 0 after a clean stop, 2 if a class cannot be imported or built, 3 if a
node's setup() failed.
"""

from __future__ import annotations

import importlib
import sys

import msgspec

from fleetbus.bus.config import BusConfig
from fleetbus.bus.node import Node, NodeSetupError
from fleetbus.bus.params import ParamError
from fleetbus.bus.runner import run
from fleetbus.launch.graph import NodeSpec


def build(spec: NodeSpec, config: BusConfig | None = None) -> Node:
    """Instantiate a node from its spec (raises ValueError naming what is wrong)."""
    module_name, _, class_name = (spec.node_class or "").partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(f"{spec.full_name}: cannot import {spec.node_class!r}: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Node)):
        raise ValueError(f"{spec.full_name}: {spec.node_class} is not a fleetbus Node class")
    return cls(spec.name, namespace=spec.namespace, params=spec.params, remap=spec.remap,
               config=config)


def main(argv: list[str]) -> int:
    specs = msgspec.json.decode(argv[1], type=list[NodeSpec])
    try:
        nodes = [build(spec) for spec in specs]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        run(*nodes)
    except (NodeSetupError, ParamError) as exc:
        print(f"error: setup failed: {exc}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
