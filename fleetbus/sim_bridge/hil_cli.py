"""`fleetbus hil px4` and `fleetbus hil ardupilot`: fleetbus's physics served to an
autopilot in the loop, from the shell. Each runs until interrupted (Ctrl-C or SIGTERM)
and prints its counters when it stops."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any


def _start_pose(text: str) -> dict[str, float]:
    """x,y[,z[,yaw]] in ENU metres and radians."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--start wants x,y[,z[,yaw]] numbers, got "
                                         f"{text!r}") from None
    if not 2 <= len(values) <= 4:
        raise argparse.ArgumentTypeError(f"--start wants 2 to 4 numbers, got {text!r}")
    return dict(zip(("x", "y", "z", "yaw"), values, strict=False))


def _run_until_stopped(run: Callable[[threading.Event], None],
                       counters: Callable[[], dict[str, int]]) -> int:
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    thread = threading.Thread(target=run, args=(stop,), name="hil", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        thread.join(5)
        signal.signal(signal.SIGTERM, previous)
    print(json.dumps({"counters": counters()}, sort_keys=True), file=sys.stderr)
    return 0


def cmd_px4(args: argparse.Namespace, config: Any = None) -> int:
    # pymavlink is the hil extra's: only these commands import it
    from fleetbus.sim_bridge.px4 import Px4Settings, make_simulator
    from fleetbus.sim_bridge.px4_sensors import Px4SensorSettings

    sensors = Px4SensorSettings(origin_lat_deg=args.lat, origin_lon_deg=args.lon,
                                origin_alt_m=args.alt, seed=args.seed)
    simulator, where = make_simulator(
        Px4Settings(physics_dt_s=args.dt, watchdog_s=args.watchdog,
                    watchdog_policy=args.watchdog_policy, sensors=sensors),
        start=args.start, instance=args.instance, host=args.host, port=args.port,
        serial=args.serial or "", baudrate=args.baud)
    # the line a launcher or a test waits for: where to connect
    print(f"PX4 simulator listening on {where}", flush=True)
    return _run_until_stopped(simulator.run, lambda: simulator.counters)


def cmd_ardupilot(args: argparse.Namespace, config: Any = None) -> int:
    from fleetbus.sim_bridge.ardupilot import make_backend

    backend = make_backend(args.frame, start=args.start, instance=args.instance,
                           host=args.host, port=args.port, silence_s=args.silence)
    print(f"ArduPilot JSON physics ({args.frame}) listening on udp "
          f"{backend.host}:{backend.port}", flush=True)

    def run(stop: threading.Event) -> None:
        with backend:
            backend.serve(stop)
    return _run_until_stopped(run, lambda: backend.physics.counters | backend.counters)


def add_hil_commands(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("hil", help="serve fleetbus physics to an autopilot in the loop")
    hil = group.add_subparsers(dest="action", required=True)

    c = hil.add_parser("px4", help="PX4 simulator MAVLink API (TCP 4560+instance, or serial)")
    c.add_argument("--instance", type=int, default=0, help="adds to the port, as PX4's -i")
    c.add_argument("--host", default="127.0.0.1", help="address to listen on")
    c.add_argument("--port", type=int, help="TCP port (default 4560 + instance; 0: any)")
    c.add_argument("--serial", metavar="DEVICE", help="a flight controller on this serial port")
    c.add_argument("--baud", type=int, default=921600)
    c.add_argument("--dt", type=float, default=0.004, help="physics step, s")
    c.add_argument("--watchdog", type=float, default=1.0,
                   help="s of autopilot silence (lockstep) before it is reported")
    c.add_argument("--watchdog-policy", choices=("pause", "freerun"), default="pause")
    c.add_argument("--start", type=_start_pose, default={}, metavar="X,Y[,Z[,YAW]]",
                   help="start pose, ENU m and rad")
    c.add_argument("--lat", type=float, default=59.9, help="origin latitude, deg")
    c.add_argument("--lon", type=float, default=10.7, help="origin longitude, deg")
    c.add_argument("--alt", type=float, default=0.0, help="origin altitude, m MSL")
    c.add_argument("--seed", type=int, default=0, help="sensor noise seed")
    c.set_defaults(func=cmd_px4)

    c = hil.add_parser("ardupilot", help="ArduPilot SITL JSON physics (UDP 9002+10*instance)")
    c.add_argument("--frame", choices=("quad", "rover", "boat"), default="quad")
    c.add_argument("--instance", type=int, default=0, help="adds 10 per instance, as SITL's -I")
    c.add_argument("--host", default="127.0.0.1", help="address to listen on")
    c.add_argument("--port", type=int, help="UDP port (default 9002 + 10 * instance; 0: any)")
    c.add_argument("--silence", type=float, default=2.0,
                   help="s without a servo packet before SITL is reported silent")
    c.add_argument("--start", type=_start_pose, default={}, metavar="X,Y[,Z[,YAW]]",
                   help="start pose, ENU m and rad")
    c.set_defaults(func=cmd_ardupilot)
