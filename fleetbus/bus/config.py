"""Where a bus lives: its socket directory, registry endpoint and host identity.

Everything comes from environment variables so that a launch file, a test or a shell
can point a process at a bus without code changes:

- ``FLEETBUS_DOMAIN``   bus name (default ``default``); separate domains never meet.
- ``FLEETBUS_RUN_DIR``  directory for ipc socket files (default
  ``$XDG_RUNTIME_DIR/fleetbus/<domain>`` or ``/tmp/fleetbus-<uid>/<domain>``), mode 0700.
- ``FLEETBUS_REGISTRY`` registry endpoint (default ``ipc://<run dir>/registry``); over
  CurveZMQ, a tcp one names the registry's certificate: ``tcp://10.0.0.5:7400#hostA``.
- ``FLEETBUS_HOST``     host identity used to choose ipc (same host) or tcp (other host).
- ``FLEETBUS_TCP``      interface to also expose node sockets on over tcp, e.g. 127.0.0.1.
- ``FLEETBUS_KEYS``     keys directory (`fleetbus keys generate`): tcp links use CurveZMQ,
  encrypted, and accept only the peers authorized there (see `fleetbus.bus.security`).
- ``FLEETBUS_CLOCK``    ``wall`` (default) or ``sim`` (follow ``/clock``).
- ``FLEETBUS_AUTOREGISTRY`` ``0`` stops ``fleetbus.run`` from embedding a registry when
  none answers.
"""

from __future__ import annotations

import os
import socket
import stat
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from fleetbus.bus.security import Keys, load_keys


@dataclass(frozen=True)
class BusConfig:
    run_dir: Path
    registry: str
    host: str
    tcp_interface: str | None = None
    clock: str = "wall"
    auto_registry: bool = True
    keys_dir: Path | None = None

    @classmethod
    def from_env(cls, **overrides: object) -> BusConfig:
        env = os.environ
        domain = env.get("FLEETBUS_DOMAIN", "default")
        if env.get("FLEETBUS_RUN_DIR"):
            run_dir = Path(env["FLEETBUS_RUN_DIR"])
        elif env.get("XDG_RUNTIME_DIR"):
            run_dir = Path(env["XDG_RUNTIME_DIR"]) / "fleetbus" / domain
        else:
            run_dir = Path(tempfile.gettempdir()) / f"fleetbus-{os.getuid()}" / domain
        clock = env.get("FLEETBUS_CLOCK", "wall")
        if clock not in ("wall", "sim"):
            raise ValueError(f"FLEETBUS_CLOCK must be 'wall' or 'sim', not {clock!r}")
        config = cls(
            run_dir=run_dir,
            registry=env.get("FLEETBUS_REGISTRY") or f"ipc://{run_dir}/registry",
            host=env.get("FLEETBUS_HOST") or socket.gethostname(),
            tcp_interface=env.get("FLEETBUS_TCP") or None,
            clock=clock,
            auto_registry=env.get("FLEETBUS_AUTOREGISTRY", "1") != "0",
            keys_dir=Path(env["FLEETBUS_KEYS"]) if env.get("FLEETBUS_KEYS") else None,
        )
        return replace(config, **overrides) if overrides else config

    def keys(self) -> Keys | None:
        """This host's CurveZMQ keys, or None when tcp links are plain (no FLEETBUS_KEYS)."""
        return None if self.keys_dir is None else load_keys(self.keys_dir)

    def ensure_run_dir(self) -> Path:
        """Create the socket directory, and its missing parents, usable by this user only,
        and refuse one that another user controls: whoever can replace the socket files
        sits between the nodes."""
        missing = [d for d in (self.run_dir, *self.run_dir.parents) if not d.exists()]
        for path in reversed(missing):
            path.mkdir(mode=0o700, exist_ok=True)
        me = os.getuid()
        info = self.run_dir.lstat()
        if info.st_uid != me or stat.S_ISLNK(info.st_mode):
            raise PermissionError(f"{self.run_dir} is a link or belongs to uid {info.st_uid}: "
                                  "fleetbus will not put its sockets there")
        parent = self.run_dir.parent.stat().st_uid
        if parent not in (me, 0):  # its owner could swap the directory for another
            raise PermissionError(f"{self.run_dir.parent} belongs to uid {parent}: "
                                  "fleetbus will not put its sockets in it")
        os.chmod(self.run_dir, 0o700)
        return self.run_dir


def remove_ipc_files(urls: list[str]) -> None:
    """Delete the socket files of closed ipc endpoints. ZeroMQ unlinks them in its I/O
    thread, which may not get to it before the process exits; we know the paths."""
    for url in urls:
        if url.startswith("ipc://"):
            try:
                os.unlink(url[len("ipc://"):])
            except FileNotFoundError:
                pass
