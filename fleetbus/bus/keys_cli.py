"""`fleetbus keys`: the CurveZMQ key pair of this host and the peers it accepts.

    fleetbus keys generate [--dir DIR] [NAME]    this host's key pair (NAME: the host)
    fleetbus keys list [--dir DIR]               it, and the authorized peers
    fleetbus keys authorize [--dir DIR] FILE     accept the peer whose public cert is FILE

DIR defaults to FLEETBUS_KEYS, else ~/.config/fleetbus/keys; tcp links use the keys once
FLEETBUS_KEYS names the directory.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from fleetbus.bus import security
from fleetbus.bus.config import BusConfig


def add_keys_commands(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("keys", help="CurveZMQ keys that encrypt and authenticate tcp links")
    actions = group.add_subparsers(dest="action", required=True)
    c = actions.add_parser("generate", help="make this host's key pair")
    c.add_argument("name", nargs="?", help="certificate name (default: FLEETBUS_HOST or the "
                   "host name)")
    c.add_argument("--force", action="store_true", help="replace an existing key pair")
    c.set_defaults(func=cmd_keys_generate)
    c = actions.add_parser("list", help="this host's public key and the authorized peers")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.set_defaults(func=cmd_keys_list)
    c = actions.add_parser("authorize", help="accept a peer: copy its public certificate "
                           "(NAME.key) into the authorized directory")
    c.add_argument("cert", type=Path, help="the peer's public certificate file")
    c.add_argument("--force", action="store_true",
                   help="replace another key authorized under the same name")
    c.set_defaults(func=cmd_keys_authorize)
    for parser in actions.choices.values():
        parser.add_argument("--dir", type=Path, help="keys directory (default: FLEETBUS_KEYS, "
                            "else ~/.config/fleetbus/keys)")


def keys_dir(args: argparse.Namespace, config: BusConfig) -> Path:
    if args.dir is not None:
        return args.dir
    if config.keys_dir is not None:
        return config.keys_dir
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "fleetbus" / "keys"


def cmd_keys_generate(args: argparse.Namespace, config: BusConfig) -> int:
    directory = keys_dir(args, config)
    keys = security.generate(directory, args.name or config.host, replace=args.force)
    public = directory / (keys.name + security.PUBLIC_SUFFIX)
    print(f"public certificate {public}\n"
          f"secret certificate {directory / (keys.name + security.SECRET_SUFFIX)} (mode 0600: "
          "never copy it)\n"
          f"public key         {keys.public.decode()}\n"
          f"next: export FLEETBUS_KEYS={directory} on this host; copy {public.name} to each "
          f"peer\n      and run `fleetbus keys authorize {public.name}` there; authorize "
          "each peer's certificate here")
    return 0


def cmd_keys_list(args: argparse.Namespace, config: BusConfig) -> int:
    keys = security.load_keys(keys_dir(args, config))
    peers = {name: key.decode() for name, key in keys.authorized().items()}
    if args.json:
        print(json.dumps({"directory": str(keys.directory), "name": keys.name,
                          "public_key": keys.public.decode(), "authorized": peers}, indent=2))
        return 0
    width = max(map(len, [keys.name, *peers]))
    print(f"{keys.directory}\nthis host  {keys.name:{width}}  {keys.public.decode()}")
    for name, key in peers.items():
        print(f"authorized {name:{width}}  {key}")
    if not peers:
        print(f"authorized none yet: `fleetbus keys authorize PEER{security.PUBLIC_SUFFIX}`")
    return 0


def cmd_keys_authorize(args: argparse.Namespace, config: BusConfig) -> int:
    path, key, new = security.authorize(keys_dir(args, config), args.cert, replace=args.force)
    # Printed so that it can be compared with what the peer's `keys list` shows: a
    # certificate that came over an untrusted channel may have been swapped.
    print(f"{'authorized' if new else 'already authorized'} {path.stem}: {key.decode()}\n"
          f"({path}; new tcp connections are checked against it at once)")
    return 0
