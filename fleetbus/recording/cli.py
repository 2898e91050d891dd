"""`fleetbus record`, `fleetbus play` and `fleetbus replay-check`."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

from fleetbus.bus.config import BusConfig
from fleetbus.bus.registry_client import fetch_graph
from fleetbus.bus.runner import start
from fleetbus.cli_error import CliError

console = Console()


def _pairs(items: list[str], sep: str, what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, found, value = item.partition(sep)
        if not found or not key:
            raise CliError(f"{what} takes KEY{sep}VALUE, got {item!r}")
        out[key] = value
    return out


def _bus(config: BusConfig) -> BusConfig:
    """The running bus's config; an error naming it when none answers."""
    if fetch_graph(config, 1.0) is None:
        raise CliError(f"no bus: no registry answers at {config.registry} (start one with "
                     "`fleetbus up` or `fleetbus launch`)")
    return config


def _clock(args: argparse.Namespace, config: BusConfig) -> BusConfig:
    return replace(config, clock=args.clock) if args.clock else config


def _wait(done: threading.Event | None, duration: float | None) -> None:
    """Until `done`, `duration` seconds, Ctrl-C (SIGINT) or SIGTERM. Both signals get a
    handler of ours, unblocked, and the wait is in short slices: in a full test run a
    `fleetbus record` never acted on SIGINT (its stacks showed it still waiting 30 s on),
    whatever disposition it had inherited; a handler runs on the main thread only when
    that thread wakes."""
    stop = threading.Event()
    signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in signals}
    try:
        _either(done or stop, stop, duration)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _either(a: threading.Event, b: threading.Event, duration: float | None) -> None:
    waited = 0.0
    while not (a.is_set() or b.is_set()) and (duration is None or waited < duration):
        a.wait(0.1)
        waited += 0.1


def cmd_record(args: argparse.Namespace, config: BusConfig) -> int:
    from fleetbus.recording.recorder import Recorder

    if not args.topics and not args.all:
        raise CliError("name the topics to record (globs allowed) or --all")
    metadata = _pairs(args.meta, "=", "--meta")
    if args.graph:
        metadata.update(graph=args.graph, graph_file=Path(args.graph).read_text())
    recorder = Recorder("recorder", params={
        "output": args.output, "topics": args.topics or ["*"], "exclude": args.exclude,
        "split_mb": args.split_size, "split_s": args.split_duration,
        "snapshot_s": args.snapshot, "metadata": metadata}, config=_clock(args, _bus(config)))
    with start(recorder):
        if args.snapshot:
            signal.signal(signal.SIGUSR1, lambda *_: recorder.call_soon_threadsafe(
                lambda: recorder.save_snapshot("SIGUSR1")))
            console.print(f"keeping the last {args.snapshot:g} s; kill -USR1 "
                          f"{__import__('os').getpid()} saves them", highlight=False)
        else:
            console.print(f"recording into {args.output}; Ctrl-C stops", highlight=False)
        _wait(None, args.duration)
    status = recorder.status()
    files = recorder.snapshots if args.snapshot else recorder.sink.files
    console.print(f"{'complete' if status['complete'] else 'INCOMPLETE'}: "
                  f"{recorder.sink.messages if recorder.sink else 0} messages, "
                  f"{len(status['topics'])} topics, {status['dropped']} dropped -> "
                  f"{', '.join(map(str, files)) or 'nothing saved'}", highlight=False)
    return 0 if status["complete"] else 1


def cmd_play(args: argparse.Namespace, config: BusConfig) -> int:
    from fleetbus.recording.player import Player

    for f in args.files:
        if not Path(f).is_file():
            raise CliError(f"no recording at {f}")
    player = Player("player", params={
        "files": args.files, "rate": args.rate, "loop": args.loop,
        "start_paused": args.start_paused, "topics": args.topics or ["*"],
        "exclude": args.exclude, "replace": args.replace, "delay_s": args.delay},
        remap=_pairs(args.remap, ":=", "--remap"), config=replace(_bus(config), clock="wall"))
    with start(player):
        if player.skipped:
            for topic, why in sorted(player.skipped.items()):
                console.print(f"[yellow]not played[/] {topic}: {why}", highlight=False)
        if args.start_paused:
            console.print("paused: press Enter to play", highlight=False)
            threading.Thread(target=lambda: (sys.stdin.readline(), player.resume()),
                             daemon=True).start()
        _wait(player.finished, None)
    console.print(f"played {player.played} messages" +
                  (f"; stopped: {player.error}" if player.error else ""), highlight=False)
    return 1 if player.error else 0


def cmd_replay_check(args: argparse.Namespace, config: BusConfig) -> int:
    from fleetbus.launch.graph import NodeSpec
    from fleetbus.launch.worker import build
    from fleetbus.recording.replay_check import recorded_node, replay_check

    files = [Path(f) for f in args.files]
    params = {k: yaml.safe_load(v) for k, v in _pairs(args.param, "=", "--param").items()}
    if ":" in args.node:
        spec = NodeSpec(name=args.name or args.node.rpartition(":")[2].lower(),
                        node_class=args.node, namespace=args.namespace, params=params)
    else:  # a node of the recorded graph, as it ran there (parameters may be overridden)
        try:
            node = recorded_node(files, args.node)
        except KeyError as exc:
            raise CliError(str(exc.args[0])) from None
        spec = NodeSpec(name=node["name"], node_class=node["class"],
                        namespace=node["namespace"], params={**node["params"], **params},
                        remap=node["remap"])
    result = replay_check(files,
                          lambda node_config: build(spec, node_config),
                          tolerance=args.tolerance, ignore=tuple(args.ignore))
    if args.json:
        print(json.dumps({"ok": result.ok, "node": result.node, "recorded": result.recorded,
                          "replayed": result.replayed, "compared": result.compared,
                          "beyond_end": result.beyond_end,
                          "differences": [d.__dict__ for d in result.differences[:100]]},
                         default=str, indent=1))
        return 0 if result.ok else 1
    table = Table(title=f"replay check of {result.node}")
    for column in ("topic", "recorded", "replayed", "compared", "differences"):
        table.add_column(column)
    for topic in sorted(result.recorded):
        table.add_row(topic, *(str(n[topic]) for n in (result.recorded, result.replayed,
                                                         result.compared)),
                      str(sum(d.topic == topic for d in result.differences)))
    console.print(table)
    for d in result.differences[:args.show]:
        console.print(f"{d.topic}[{d.index}].{d.path}: recorded {d.recorded!r}, replayed "
                      f"{d.replayed!r}", highlight=False)
    console.print("[green]same[/]" if result.ok else "[red]different[/]")
    return 0 if result.ok else 1


def cmd_export(args: argparse.Namespace, config: BusConfig) -> int:
    from fleetbus.monitoring.foxglove_export import export_foxglove

    for f in args.files:
        if not Path(f).is_file():
            raise CliError(f"no recording at {f}")
    result = export_foxglove([Path(f) for f in args.files], Path(args.output),
                             args.topics or ["*"])
    problems = sum(result.problems.values())
    console.print(f"{result.messages} messages on {result.topics} topics -> {args.output}"
                  + (f"; {problems} skipped ({result.first_problem})" if problems else ""),
                  highlight=False)
    return 0


def add_recording_commands(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("record", help="record topics into an MCAP file")
    c.add_argument("topics", nargs="*", help="topics or globs (or --all)")
    c.add_argument("--all", action="store_true", help="every topic, also later ones")
    c.add_argument("-o", "--output", default="run.mcap")
    c.add_argument("--exclude", action="append", default=[], metavar="GLOB")
    c.add_argument("--split-size", type=float, default=0.0, metavar="MB")
    c.add_argument("--split-duration", type=float, default=0.0, metavar="S")
    c.add_argument("--snapshot", type=float, default=0.0, metavar="S",
                   help="keep only the last S seconds; saved on SIGUSR1 or a breach Event")
    c.add_argument("--graph", help="the graph file being run, kept in the recording")
    c.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE",
                   help="more metadata: seed, fault plan, ... (repeatable)")
    c.add_argument("--clock", choices=("wall", "sim"), help="default: FLEETBUS_CLOCK")
    c.add_argument("--duration", type=float, help="stop after S seconds")
    c.set_defaults(func=cmd_record)

    c = sub.add_parser("play", help="republish a recording, driving /clock")
    c.add_argument("files", nargs="+", help="the recording (or its parts, in order)")
    c.add_argument("--rate", type=float, default=1.0, help="0: as fast as possible")
    c.add_argument("--loop", action="store_true")
    c.add_argument("--start-paused", action="store_true")
    c.add_argument("--topics", nargs="*", default=[], metavar="GLOB")
    c.add_argument("--exclude", action="append", default=[], metavar="GLOB")
    c.add_argument("--replace", action="append", default=[], metavar="NODE",
                   help="do not play what this recorded node published: run the node under "
                   "test in its place (repeatable)")
    c.add_argument("--remap", action="append", default=[], metavar="FROM:=TO")
    c.add_argument("--delay", type=float, default=1.0, metavar="S",
                   help="for subscribers to connect before the first message")
    c.set_defaults(func=cmd_play)

    c = sub.add_parser("export", help="a recording as the Foxglove app reads it (JSON, "
                       "LocationFix, GeoJSON)")
    c.add_argument("files", nargs="+", help="the recording (or its parts, in order)")
    c.add_argument("-o", "--output", required=True)
    c.add_argument("--topics", nargs="*", default=[], metavar="GLOB")
    c.set_defaults(func=cmd_export)

    c = sub.add_parser("replay-check", help="run a node on a recording's inputs in lockstep "
                       "and compare its outputs with the recorded ones")
    c.add_argument("files", nargs="+")
    c.add_argument("--node", required=True, help="package.module:Class, or the name of a "
                   "node of the recorded graph (e.g. /car1/fusion: class and parameters "
                   "from the recording)")
    c.add_argument("--name", help="its name as recorded (default: the class in lower case)")
    c.add_argument("--namespace", default="")
    c.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE")
    c.add_argument("--tolerance", type=float, default=1e-9, help="relative, for numbers")
    c.add_argument("--ignore", action="append", default=[], metavar="GLOB",
                   help="output topics not to compare")
    c.add_argument("--show", type=int, default=10, help="differences to print")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_replay_check)


