"""`fleetbus top`, `fleetbus foxglove` and `fleetbus fleet status`."""

from __future__ import annotations

import argparse

from fleetbus.bus.config import BusConfig
from fleetbus.bus.runner import run
from fleetbus.monitoring.bus_top import add_top_command
from fleetbus.monitoring.fleet_status import cmd_fleet_status


def cmd_foxglove(args: argparse.Namespace, config: BusConfig) -> int:
    from fleetbus.monitoring.foxglove_bridge import FoxgloveBridge

    run(FoxgloveBridge("foxglove", params={"port": args.port, "topics": args.topics or ["*"]},
                       config=config))
    return 0


def add_monitoring_commands(sub: argparse._SubParsersAction) -> None:
    add_top_command(sub)
    c = sub.add_parser("foxglove", help="serve the live bus to the Foxglove app "
                       "(ws://127.0.0.1:PORT) until Ctrl-C")
    c.add_argument("--port", type=int, default=8765, help="0: any free port (logged)")
    c.add_argument("--topics", nargs="*", default=[], metavar="GLOB")
    c.set_defaults(func=cmd_foxglove)

    group = sub.add_parser("fleet", help="several vehicle buses at once")
    actions = group.add_subparsers(dest="action", required=True)
    c = actions.add_parser("status", help="health and missions of each bus")
    c.add_argument("registries", nargs="+", metavar="URL",
                   help="each bus's registry, e.g. tcp://10.0.0.5:7400")
    c.add_argument("--timeout", type=float, default=2.0, help="s to wait for each bus")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_fleet_status)
