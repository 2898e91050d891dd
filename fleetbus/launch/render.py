"""Draw a graph's nodes and topics as Mermaid or Graphviz dot text."""

from __future__ import annotations

import re

from fleetbus.bus.protocol import NodeInfo


def _id(prefix: str, name: str) -> str:
    return prefix + re.sub(r"\W", "_", name)


def _edges(nodes: list[NodeInfo]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Topic → type, and (from, to) edges between node and topic ids."""
    topics: dict[str, str] = {}
    edges = []
    for node in nodes:
        for pub in node.publishers:
            topics.setdefault(pub.topic, pub.type_name)
            edges.append((_id("n", node.name), _id("t", pub.topic)))
        for sub in node.subscriptions:
            topics.setdefault(sub.topic, sub.type_name)
            edges.append((_id("t", sub.topic), _id("n", node.name)))
    return topics, edges


def mermaid(nodes: list[NodeInfo]) -> str:
    topics, edges = _edges(nodes)
    lines = ["flowchart LR"]
    lines += [f'  {_id("n", n.name)}["{n.name}"]' for n in nodes]
    lines += [f'  {_id("t", t)}(["{t}<br/><small>{ty}</small>"])' for t, ty in topics.items()]
    lines += [f"  {a} --> {b}" for a, b in edges]
    return "\n".join(lines) + "\n"


def dot(nodes: list[NodeInfo]) -> str:
    topics, edges = _edges(nodes)
    lines = ["digraph fleetbus {", "  rankdir=LR;"]
    lines += [f'  {_id("n", n.name)} [label="{n.name}", shape=box];' for n in nodes]
    lines += [f'  {_id("t", t)} [label="{t}\\n{ty}", shape=ellipse];' for t, ty in topics.items()]
    lines += [f"  {a} -> {b};" for a, b in edges]
    return "\n".join([*lines, "}"]) + "\n"
