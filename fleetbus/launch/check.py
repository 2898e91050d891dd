"""`fleetbus launch --check`: everything that can be found wrong without launching.

Beyond the file itself (fleetbus.launch.loader), each Python node is built and its
setup() run on a private bus nothing can reach, which tells us — without a separate
description to keep in sync — which parameters it declares and which topics it
publishes and subscribes with which types.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from fleetbus.bus.config import BusConfig
from fleetbus.bus.protocol import NodeInfo
from fleetbus.launch.graph import Graph, NodeSpec
from fleetbus.launch.loader import Problem, at
from fleetbus.launch.worker import build

SETUP_TIMEOUT_S = 30.0


def describe(graph: Graph) -> tuple[list[NodeInfo], list[Problem]]:
    """Run each Python node's setup() on a private bus and report what it declared (its
    registration record), plus the problems met doing so."""
    problems: list[Problem] = []
    infos: list[NodeInfo] = []
    run_dir = Path(tempfile.mkdtemp(prefix="fbc-", dir="/tmp"))
    config = BusConfig.from_env(run_dir=run_dir, registry=f"ipc://{run_dir}/none",
                                auto_registry=False, tcp_interface=None)
    try:
        for index, spec in enumerate(graph.nodes):
            if spec.node_class is not None:
                info = _describe(spec, config, at_node(graph, index), problems)
                if info is not None:
                    infos.append(info)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return infos, problems


def check(graph: Graph, file: str = "<graph>") -> list[Problem]:
    infos, problems = describe(graph)
    return problems + _topic_mismatches(infos, file)


def at_node(graph: Graph, index: int) -> Callable[[str], Problem]:
    return lambda message: at(graph, index, message)


def _describe(spec: NodeSpec, config: BusConfig, problem: Callable[[str], Problem],
              problems: list[Problem]) -> NodeInfo | None:
    try:
        node = build(spec, config)
    except ValueError as exc:
        problems.append(problem(str(exc)))
        return None
    node.start()
    try:
        if not node.ready.wait(SETUP_TIMEOUT_S):
            problems.append(problem(f"{spec.full_name}: setup() did not finish "
                                    f"within {SETUP_TIMEOUT_S:g} s"))
            return None
        if node.setup_error is not None:
            problems.append(problem(f"{spec.full_name}: setup() failed: {node.setup_error}"))
            return None
        info = node.info()
    finally:
        node.stop()
        node.stopped.wait(5.0)
    declared = sorted(param.name for param in info.params)
    for name in sorted(set(spec.params) - set(declared)):
        problems.append(problem(f"{spec.full_name}: unknown parameter {name!r} "
                                f"(declared: {', '.join(declared) or 'none'})"))
    return info


def _topic_mismatches(infos: list[NodeInfo], file: str) -> list[Problem]:
    publishers: dict[str, list[tuple[str, str, int]]] = defaultdict(list)
    for info in infos:
        for pub in info.publishers:
            publishers[pub.topic].append((info.name, pub.type_name, pub.schema_hash))
    problems = []
    for topic, pubs in publishers.items():
        if len({h for _, _, h in pubs}) > 1:
            problems.append(Problem(file, 0, 0, f"{topic} is published with different types: "
                                    + ", ".join(f"{n} ({t})" for n, t, _ in pubs)))
    for info in infos:
        for sub in info.subscriptions:
            for name, type_name, schema_hash in publishers.get(sub.topic, []):
                if sub.schema_hash and schema_hash != sub.schema_hash:
                    problems.append(Problem(
                        file, 0, 0, f"{sub.topic}: {name} publishes {type_name} but "
                        f"{info.name} subscribes with {sub.type_name}"))
    return problems
