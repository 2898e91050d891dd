"""The `fleetbus` command: run a registry and look into a running bus.

Every listing reads the registry, whose numbers are the nodes' own counters (publisher
rates are measured where messages are sent), so a slow terminal never skews a rate.
Human tables by default; `--json` for scripts.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec
import yaml
from rich.console import Console
from rich.table import Table

from fleetbus.bus import protocol as p
from fleetbus.bus.config import BusConfig
from fleetbus.bus.doctor import diagnose
from fleetbus.bus.introspect import find_node, plain, topics, visible
from fleetbus.bus.keys_cli import add_keys_commands
from fleetbus.bus.node import Node, NodeSetupError
from fleetbus.bus.params import (
    PARAM_SERVICES,
    ParamList,
    ParamListRequest,
    ParamSetRequest,
    ParamSetResult,
)
from fleetbus.bus.pubsub import AnyMessage
from fleetbus.bus.registry import Registry, RegistryRunning
from fleetbus.bus.registry_client import fetch_graph
from fleetbus.bus.runner import configure_logging, run, start
from fleetbus.bus.services import ServiceError
from fleetbus.cli_error import CliError
from fleetbus.launch.graph import NodeSpec
from fleetbus.launch.worker import build
from fleetbus.messages.base import Message, lookup_type
from fleetbus.monitoring.cli import add_monitoring_commands
from fleetbus.recording.cli import add_recording_commands
from fleetbus.sim_bridge.hil_cli import add_hil_commands

console = Console()


# -- helpers -------------------------------------------------------------------------------


def _graph(config: BusConfig, timeout: float = 1.0) -> p.Graph:
    graph = fetch_graph(config, timeout)
    if graph is None:
        raise CliError(
            f"no registry answered at {config.registry} — start one with `fleetbus up` "
            "or launch a graph (FLEETBUS_DOMAIN / FLEETBUS_REGISTRY select the bus)"
        )
    return graph


def _print_json(data: Any) -> None:
    print(json.dumps(plain(data), indent=2, default=str))


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    console.print(table)


def _rate(hz: float) -> str:
    return f"{hz:.1f} Hz" if hz else "-"


def _bw(bps: float) -> str:
    for unit in ("B/s", "KB/s", "MB/s"):
        if bps < 1000:
            return f"{bps:.1f} {unit}"
        bps /= 1000
    return f"{bps:.1f} GB/s"


def _parse_data(text: str, cls: type[Message]) -> Message:
    """Build a message from YAML/JSON text such as ``{data: hello}``."""
    try:
        data = yaml.safe_load(text) if text else {}
    except yaml.YAMLError as exc:
        raise CliError(f"message data is not valid YAML: {exc}") from None
    try:
        return msgspec.convert(data or {}, cls)
    except msgspec.ValidationError as exc:
        raise CliError(f"{cls.__msgtype__}: {exc}") from None


def _lookup(name: str, imports: bool = True) -> type[Message]:
    """`imports=False` for a name read from the graph: a peer's announcement must not make
    this process import a module."""
    try:
        return lookup_type(name, imports=imports)
    except (KeyError, ImportError, AttributeError) as exc:
        raise CliError(str(exc).strip("'\"")) from None


class _ToolNode(Node):
    """The CLI's own node: hidden from listings (its name starts with /_)."""

    def __init__(
        self, config: BusConfig, role: str, on_setup: Callable[[Node], Any] | None = None
    ) -> None:
        super().__init__(f"/_cli_{role}", config=config)
        self._on_setup = on_setup

    def setup(self) -> None:
        if self._on_setup is not None:
            self._on_setup(self)


def _with_node(config: BusConfig, node: Node, body: Callable[[], int]) -> int:
    _graph(config)  # fail fast and clearly when there is no bus
    with start(node):
        return body()


def _until_interrupted(done: threading.Event, timeout: float | None) -> None:
    deadline = None if timeout is None else time.monotonic() + timeout
    while not done.wait(0.1):
        if deadline is not None and time.monotonic() > deadline:
            return


# -- up ------------------------------------------------------------------------------------------


def cmd_up(args: argparse.Namespace, config: BusConfig) -> int:
    try:
        registry = Registry(config, tcp=args.tcp, join=args.join)
    except RegistryRunning as exc:
        raise CliError(str(exc)) from None
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: registry.stop())
    console.print(f"registry {registry.id} on {', '.join(registry.endpoints)}", highlight=False)
    registry.serve()
    return 0


# -- run ---------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace, config: BusConfig) -> int:
    """Run one node class as this process: ``fleetbus run pkg.mod:Class -p gain=2``."""
    params = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep:
            raise CliError(f"--param takes key=value, got {item!r}")
        params[key] = yaml.safe_load(value)
    name = args.name or args.node_class.rpartition(":")[2].lower()
    spec = NodeSpec(name=name, node_class=args.node_class, namespace=args.namespace,
                    params=params)
    try:
        node = build(spec, config)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    try:
        run(node)
    except NodeSetupError as exc:
        raise CliError(str(exc)) from None
    return 0


# -- launch ------------------------------------------------------------------------------------


def _print_problems(problems: list) -> int:
    for problem in problems:
        console.print(f"[red]error[/] {problem}", highlight=False, soft_wrap=True)
    return 2


def cmd_launch(args: argparse.Namespace, config: BusConfig) -> int:
    from fleetbus.launch.check import check
    from fleetbus.launch.graph import Graph, schema
    from fleetbus.launch.loader import GraphError
    from fleetbus.launch.supervisor import Supervisor

    if args.schema:
        print(json.dumps(schema(), indent=2))
        return 0
    if not args.file:
        raise CliError("launch needs a graph file (or --schema)")
    try:
        graph = Graph.load(args.file, sets=args.set)
        problems = check(graph, args.file) if args.check else []
    except GraphError as exc:
        problems = exc.problems
    if problems:
        return _print_problems(problems)
    if args.check:
        console.print(f"[green]ok[/]: {len(graph.nodes)} node(s) in {graph.name}")
        return 0
    supervisor = Supervisor(graph, BusConfig.from_env(), log_format=args.log_format)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: supervisor.stop())
    return supervisor.run(args.duration)


def cmd_graph(args: argparse.Namespace, config: BusConfig) -> int:
    from fleetbus.launch.check import describe
    from fleetbus.launch.graph import Graph
    from fleetbus.launch.loader import GraphError
    from fleetbus.launch.render import dot, mermaid

    if args.live:
        nodes = visible(_graph(config).nodes)
    elif args.file:
        try:
            nodes, problems = describe(Graph.load(args.file, sets=args.set))
        except GraphError as exc:
            problems = exc.problems
        if problems:
            return _print_problems(problems)
    else:
        raise CliError("graph needs a graph file or --live")
    print(mermaid(nodes) if args.format == "mermaid" else dot(nodes), end="")
    return 0


# -- topic ---------------------------------------------------------------------------------------


def cmd_topic_list(args: argparse.Namespace, config: BusConfig) -> int:
    views = topics(_graph(config), args.all)
    if args.json:
        _print_json([
            {
                "topic": v.topic,
                "types": sorted(v.types),
                "publishers": [n for n, _ in v.publishers],
                "subscribers": [n for n, _ in v.subscriptions],
                "rate_hz": v.rate_hz,
                "bandwidth_bps": v.bandwidth_bps,
            }
            for v in views.values()
        ])
        return 0
    _table("topics", ["topic", "type", "pubs", "subs", "rate", "bandwidth"], [
        [v.topic, ", ".join(sorted(v.types)), len(v.publishers), len(v.subscriptions),
         _rate(v.rate_hz), _bw(v.bandwidth_bps)]
        for v in views.values()
    ])
    return 0


def cmd_topic_info(args: argparse.Namespace, config: BusConfig) -> int:
    view = topics(_graph(config), include_hidden=True).get(args.topic)
    if view is None:
        raise CliError(f"no node publishes or subscribes to {args.topic}")
    if args.json:
        _print_json({
            "topic": view.topic,
            "publishers": [{"node": n, **msgspec.to_builtins(i)} for n, i in view.publishers],
            "subscriptions": [
                {"node": n, **msgspec.to_builtins(i)} for n, i in view.subscriptions
            ],
        })
        return 0
    _table(f"{view.topic}: publishers",
           ["node", "type", "latched", "subs", "messages", "rate", "bandwidth"], [
        [n, f"{i.type_name}#{i.schema_hash:016x}"[:40], i.latched, i.subscribers, i.messages,
         _rate(i.rate_hz), _bw(i.bandwidth_bps)] for n, i in view.publishers
    ])
    _table(f"{view.topic}: subscriptions",
           ["node", "type", "depth", "conflate", "max_age", "messages", "rate", "gaps",
            "stale", "rejected", "latency"], [
        [n, i.type_name, i.depth, i.conflate, i.max_age_s or "-", i.messages,
         _rate(i.rate_hz), i.gaps, i.stale, i.rejected,
         "-" if i.latency_s is None else f"{i.latency_s * 1e3:.2f} ms"]
        for n, i in view.subscriptions
    ])
    return 0


def cmd_topic_echo(args: argparse.Namespace, config: BusConfig) -> int:
    done = threading.Event()
    seen = 0

    def show(msg: AnyMessage) -> None:
        nonlocal seen
        if done.is_set():
            return
        data = plain(msg.to_builtins())
        if args.json:
            print(json.dumps({"topic": msg.topic, "type": msg.header.type_name,
                              "seq": msg.header.seq, "stamp_ns": msg.header.source_stamp_ns,
                              "data": data}, default=str), flush=True)
        else:
            print(f"--- # {msg.topic} {msg.header.type_name} seq {msg.header.seq}")
            print(yaml.safe_dump(data, sort_keys=False, default_flow_style=None).rstrip(),
                  flush=True)
        seen += 1
        if args.count and seen >= args.count:
            done.set()

    def body() -> int:
        _until_interrupted(done, args.timeout)
        return 0 if seen or not args.count else 1

    node = _ToolNode(config, "echo", lambda n: n.subscribe(args.topic, None, show))
    return _with_node(config, node, body)


def _watch_rates(args: argparse.Namespace, config: BusConfig, field_name: str) -> int:
    """Print the publisher-side rate (or bandwidth) of a topic once per heartbeat."""
    reports = 0
    while not args.count or reports < args.count:
        view = topics(_graph(config), include_hidden=True).get(args.topic)
        pubs = view.publishers if view else []
        per = {n: getattr(i, field_name) for n, i in pubs}
        total = sum(per.values())
        if args.json:
            print(json.dumps({"topic": args.topic, field_name: total, "publishers": per}),
                  flush=True)
        else:
            shown = _rate(total) if field_name == "rate_hz" else _bw(total)
            detail = ", ".join(f"{n}: {v:.1f}" for n, v in per.items()) or "no publishers"
            print(f"{args.topic}: {shown}  ({detail})", flush=True)
        reports += 1
        time.sleep(p.HEARTBEAT_S)
    return 0


def cmd_topic_hz(args: argparse.Namespace, config: BusConfig) -> int:
    return _watch_rates(args, config, "rate_hz")


def cmd_topic_bw(args: argparse.Namespace, config: BusConfig) -> int:
    return _watch_rates(args, config, "bandwidth_bps")


def cmd_topic_pub(args: argparse.Namespace, config: BusConfig) -> int:
    cls = _lookup(args.type)
    msg = _parse_data(args.data, cls)
    view = topics(_graph(config), include_hidden=True).get(args.topic)
    expected = len(view.subscriptions) if view else 0
    holder: dict[str, Any] = {}
    node = _ToolNode(config, "pub", lambda n: holder.setdefault(
        "pub", n.publisher(args.topic, cls, latched=args.latched)
    ))

    def body() -> int:
        pub = holder["pub"]
        deadline = time.monotonic() + args.wait
        while pub.subscribers < expected and time.monotonic() < deadline:
            time.sleep(0.01)  # let known subscribers connect, or the first message is lost
        sent = 0
        period = 1.0 / args.rate if args.rate else 0.0
        while not args.count or sent < args.count:
            node.call_soon_threadsafe(lambda: pub.publish(msg)).result(2.0)
            sent += 1
            if args.count and sent >= args.count:
                break
            time.sleep(period or 1.0)
        if args.latched:
            console.print("latched: holding the value for late joiners until Ctrl-C")
            _until_interrupted(threading.Event(), None)
        print(f"published {sent} message(s) to {args.topic} ({pub.subscribers} subscriber(s))")
        return 0

    return _with_node(config, node, body)


# -- node --------------------------------------------------------------------------------------


def cmd_node_list(args: argparse.Namespace, config: BusConfig) -> int:
    nodes = sorted(visible(_graph(config).nodes, args.all), key=lambda n: n.name)
    if args.json:
        _print_json([{"name": n.name, "uid": n.uid, "host": n.host, "pid": n.pid,
                      "publishers": len(n.publishers), "subscriptions": len(n.subscriptions),
                      "services": len(n.services), "problems": sum(n.counters.values())}
                     for n in nodes])
        return 0
    _table("nodes", ["node", "host", "pid", "pubs", "subs", "services", "problems"], [
        [n.name, n.host, n.pid, len(n.publishers), len(n.subscriptions), len(n.services),
         sum(n.counters.values()) or "-"] for n in nodes
    ])
    return 0


def cmd_node_info(args: argparse.Namespace, config: BusConfig) -> int:
    node = find_node(_graph(config), args.node)
    if node is None:
        raise CliError(f"no node named {args.node}")
    data = msgspec.to_builtins(node)
    if args.json:
        _print_json(data)
    else:
        print(yaml.safe_dump(plain(data), sort_keys=False, default_flow_style=None))
    return 0


# -- param -------------------------------------------------------------------------------------


def cmd_param_list(args: argparse.Namespace, config: BusConfig) -> int:
    graph = _graph(config)
    nodes = [find_node(graph, args.node)] if args.node else visible(graph.nodes)
    if None in nodes:
        raise CliError(f"no node named {args.node}")
    rows = [(n.name, prm) for n in nodes if n for prm in n.params]
    if args.json:
        _print_json([{"node": n, **msgspec.to_builtins(prm)} for n, prm in rows])
        return 0
    _table("parameters", ["node", "name", "type", "value", "description"],
           [[n, prm.name, prm.type, prm.value, prm.description] for n, prm in rows])
    return 0


def _call(config: BusConfig, name: str, request: Message, timeout: float,
          response_type: type[Message] | None = None) -> Any:
    node = _ToolNode(config, "call")

    def body() -> Any:
        try:
            return node.call_soon_threadsafe(
                lambda: node.call(name, request, timeout, response_type)
            ).result(timeout + 1.0)
        except ServiceError as exc:
            raise CliError(str(exc)) from None

    return _with_node(config, node, body)


def cmd_param_get(args: argparse.Namespace, config: BusConfig) -> int:
    result = _call(config, f"{args.node}/list_params", ParamListRequest(), args.timeout,
                   ParamList)
    values = dict(zip(result.names, result.values, strict=True))
    if args.name not in values:
        raise CliError(f"{args.node} has no parameter {args.name!r} "
                       f"(it has: {', '.join(result.names) or 'none'})")
    print(json.dumps(values[args.name]) if args.json else values[args.name])
    return 0


def cmd_param_set(args: argparse.Namespace, config: BusConfig) -> int:
    try:
        value = yaml.safe_load(args.value)
    except yaml.YAMLError as exc:
        raise CliError(f"value is not valid YAML: {exc}") from None
    result = _call(config, f"{args.node}/set_param", ParamSetRequest(name=args.name, value=value),
                   args.timeout, ParamSetResult)
    if not result.ok:
        raise CliError(result.error)
    print(f"{args.node}: {args.name} = {value!r}")
    return 0


# -- service -----------------------------------------------------------------------------------


def cmd_service_list(args: argparse.Namespace, config: BusConfig) -> int:
    rows = [
        (n.name, s)
        for n in visible(_graph(config).nodes, args.all)
        for s in n.services
        if args.all or s.name.rpartition("/")[2] not in PARAM_SERVICES
    ]
    if args.json:
        _print_json([{"node": n, **msgspec.to_builtins(s)} for n, s in rows])
        return 0
    _table("services", ["service", "node", "request", "response", "calls", "errors"],
           [[s.name, n, s.request_type, s.response_type, s.calls, s.errors] for n, s in rows])
    return 0


def cmd_service_call(args: argparse.Namespace, config: BusConfig) -> int:
    graph = _graph(config)
    info = next((s for n in graph.nodes for s in n.services if s.name == args.service), None)
    if info is None:
        raise CliError(f"no node serves {args.service}")
    request = _parse_data(args.data, _lookup(args.type) if args.type
                          else _lookup(info.request_type, imports=False))
    response = _call(config, args.service, request, args.timeout)
    if args.json:
        _print_json(response)
    else:
        print(yaml.safe_dump(plain(response), sort_keys=False, default_flow_style=None).rstrip())
    return 0


# -- doctor ------------------------------------------------------------------------------------


def cmd_doctor(args: argparse.Namespace, config: BusConfig) -> int:
    graph = _graph(config)
    findings = diagnose(graph)
    if args.json:
        _print_json([{"level": f.level, "text": f.text, "nodes": list(f.nodes)}
                     for f in findings])
    elif not findings:
        console.print(f"[green]all good[/]: {len(graph.nodes)} node(s), no problems found")
    else:
        colours = {"error": "red", "warn": "yellow", "info": "cyan"}
        for f in findings:
            console.print(f"[{colours.get(f.level, 'white')}]{f.level:5}[/] {f.text}",
                          highlight=False)
    return 1 if any(f.level == "error" for f in findings) else 0


# -- parser ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fleetbus", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run the discovery registry in the foreground")
    up.add_argument("--tcp", help="also serve on this tcp endpoint, e.g. tcp://127.0.0.1:7400")
    up.add_argument("--join", action="append", default=[], metavar="URL",
                    help="join another host's registry (repeatable)")
    up.set_defaults(func=cmd_up)

    c = sub.add_parser("launch", help="run a node graph from a YAML file")
    c.add_argument("file", nargs="?")
    c.add_argument("--duration", type=float, help="stop after S seconds")
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override an argument (name=value) or a parameter (node.param=value)")
    c.add_argument("--log-format", choices=("text", "json"), default="text")
    c.add_argument("--check", action="store_true", help="validate without running")
    c.add_argument("--schema", action="store_true", help="print the graph file JSON Schema")
    c.set_defaults(func=cmd_launch)

    c = sub.add_parser("graph", help="draw a graph file (or the running bus) as text")
    c.add_argument("file", nargs="?")
    c.add_argument("--format", choices=("mermaid", "dot"), default="mermaid")
    c.add_argument("--live", action="store_true", help="what is connected on the bus now")
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    c.set_defaults(func=cmd_graph)

    c = sub.add_parser("run", help="run a node class as this process")
    c.add_argument("node_class", help="package.module:Class")
    c.add_argument("--name", help="node name (default: the class name in lower case)")
    c.add_argument("--namespace", default="", help="prefix for relative topic names")
    c.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                   help="parameter override, value in YAML (repeatable)")
    c.set_defaults(func=cmd_run)

    def group(name: str, help_text: str) -> argparse._SubParsersAction:
        g = sub.add_parser(name, help=help_text)
        return g.add_subparsers(dest="action", required=True)

    def command(g: argparse._SubParsersAction, name: str, func: Callable, help_text: str,
                json_flag: bool = True) -> argparse.ArgumentParser:
        c = g.add_parser(name, help=help_text)
        if json_flag:
            c.add_argument("--json", action="store_true", help="machine-readable output")
        c.set_defaults(func=func)
        return c

    topic = group("topic", "inspect and use topics")
    c = command(topic, "list", cmd_topic_list, "topics with types, peers and rates")
    c.add_argument("--all", action="store_true", help="include tool nodes' topics")
    c = command(topic, "info", cmd_topic_info, "publishers and subscriptions of a topic")
    c.add_argument("topic")
    c = command(topic, "echo", cmd_topic_echo, "print messages as they arrive")
    c.add_argument("topic")
    c.add_argument("--count", type=int, default=0, help="stop after N messages")
    c.add_argument("--timeout", type=float, help="give up after S seconds")
    for name, func, what in (("hz", cmd_topic_hz, "rate"), ("bw", cmd_topic_bw, "bandwidth")):
        c = command(topic, name, func, f"publisher-side {what} of a topic")
        c.add_argument("topic")
        c.add_argument("--count", type=int, default=0, help="stop after N reports")
    c = command(topic, "pub", cmd_topic_pub, "publish a message", json_flag=False)
    c.add_argument("topic")
    c.add_argument("type", help="message type, e.g. fleetbus/String or pkg.mod:Class")
    c.add_argument("data", nargs="?", default="", help="YAML, e.g. '{data: hello}'")
    c.add_argument("--rate", type=float, default=0.0, help="Hz (default: once a second)")
    c.add_argument("--count", type=int, default=1, help="messages to send (0 = until Ctrl-C)")
    c.add_argument("--latched", action="store_true")
    c.add_argument("--wait", type=float, default=2.0,
                   help="seconds to wait for known subscribers to connect")

    node = group("node", "inspect nodes")
    c = command(node, "list", cmd_node_list, "running nodes")
    c.add_argument("--all", action="store_true", help="include tool nodes")
    c = command(node, "info", cmd_node_info, "everything the registry knows about a node")
    c.add_argument("node")

    param = group("param", "read and change node parameters")
    c = command(param, "list", cmd_param_list, "parameters (of one node or all)")
    c.add_argument("node", nargs="?")
    c = command(param, "get", cmd_param_get, "one parameter, asked from its node")
    c.add_argument("node")
    c.add_argument("name")
    c.add_argument("--timeout", type=float, default=2.0)
    c = command(param, "set", cmd_param_set, "change a parameter (type-checked)", False)
    c.add_argument("node")
    c.add_argument("name")
    c.add_argument("value", help="YAML scalar or list, e.g. 2.5, true, [1, 2]")
    c.add_argument("--timeout", type=float, default=2.0)

    service = group("service", "list and call services")
    c = command(service, "list", cmd_service_list, "services with their types")
    c.add_argument("--all", action="store_true", help="include the built-in parameter services")
    c = command(service, "call", cmd_service_call, "call a service")
    c.add_argument("service")
    c.add_argument("data", nargs="?", default="", help="request as YAML")
    c.add_argument("--type", help="request type if the registry's name is not importable")
    c.add_argument("--timeout", type=float, default=2.0)

    c = sub.add_parser("doctor", help="explain what is wrong with the running graph")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_doctor)
    add_hil_commands(sub)
    add_recording_commands(sub)
    add_monitoring_commands(sub)
    add_keys_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # A node run as this process logs like any node; the tools' own nodes must not chatter.
    configure_logging(logging.INFO if args.command in ("run", "launch", "hil", "foxglove")
                      else logging.WARNING)
    # Tools never embed a registry (it would vanish with them); `run` may, like any program.
    config = BusConfig.from_env(auto_registry=args.command in ("run", "launch"))
    try:
        return args.func(args, config)
    except CliError as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
