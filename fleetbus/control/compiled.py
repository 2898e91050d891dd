"""A disk cache for CasADi functions whose solver callbacks are compiled to C.

Compiling a controller's problem (just-in-time, with gcc) takes seconds to tens of
seconds, and makes every solve 1.5-2.7x faster (see benchmarks/test_mpc.py). CasADi can
serialise such a function with its binary embedded (`jit_serialize: embed`), so the
compile is paid once per problem: the cache key covers everything that shapes the
problem (the caller's description of it, the sources it is built from and the CasADi
version), and a changed model or setting simply misses.

The cache lives in `$FLEETBUS_CACHE_DIR`, else `$XDG_CACHE_HOME/fleetbus`, else
`~/.cache/fleetbus`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import casadi as ca

from fleetbus.control.solver_process import cache_lock

log = logging.getLogger(__name__)
UNUSED_DAYS = 30  # a cache entry unused this long is removed by the next build


def compiler_available() -> bool:
    return shutil.which("gcc") is not None


def jit_options(name: str) -> dict[str, Any]:
    """CasADi options that compile a function's callbacks with gcc and embed the binary
    when the function is saved. -O1: as fast as -O2 here, in two thirds of the compile
    time. The C sources are left for load_or_build to remove: an NLP solver writes its
    callbacks' to the working directory whatever the options say, and CasADi's own clean-up
    then warns about files it already removed."""
    return {"jit": True, "compiler": "shell", "jit_serialize": "embed", "jit_cleanup": False,
            "jit_name": name, "jit_temp_suffix": False,
            "jit_options": {"flags": ["-O1"], "verbose": False,
                            "directory": tempfile.gettempdir() + os.sep}}


def jit_name(key: str) -> str:
    return f"fleetbus_jit_{key}_{os.getpid()}"


def cache_dir() -> Path:
    if os.environ.get("FLEETBUS_CACHE_DIR"):
        return Path(os.environ["FLEETBUS_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fleetbus"


def cache_key(description: str, sources: Iterable[Path]) -> str:
    digest = hashlib.sha256(description.encode())
    digest.update(ca.__version__.encode())
    for path in sorted(sources):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:24]


def lock_file(cached: Path) -> Path:
    """The lock that serialises building, loading and destroying the function cached in
    `cached` (see fleetbus.control.solver_process)."""
    return cached.with_suffix(".lock")


def build_once(kind: str, key: str, build: Callable[[], ca.Function]) -> Path | ca.Function:
    """The cache file of the function under `key`, after `build()` (which compiles with
    jit_options(jit_name(key))) and a save there if it was missing or unreadable; the
    function itself if the cache cannot be written. One process builds a key at a time:
    the others wait for it and find its file (a fleet of five drones and ships started on
    a fresh machine ran five compiles of two problems at once, 650 MiB of gcc each)."""
    path = cache_dir() / kind / f"{key}.casadi"
    if not path.exists():
        _prune(path.parent)  # holding no lock: it takes the others' one at a time
    with cache_lock(lock_file(path)):
        if _loads(path):
            os.utime(path)  # in use: not pruned
            return path
        try:
            function = build()
        finally:
            for directory in (Path(), Path(tempfile.gettempdir())):
                (directory / f"{jit_name(key)}.c").unlink(missing_ok=True)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # write then rename, so that a reader without the lock never sees half a file
            with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".part",
                                             delete=False) as tmp:
                pass
            function.save(tmp.name)
            os.replace(tmp.name, path)
        except OSError as exc:
            log.warning("compiled-function cache %s not written: %s", path, exc)
            return function
        del function  # under the lock: destroyed, it deletes the binary the file names
    return path


def _prune(directory: Path) -> None:
    """Removes the entries no process has used for UNUSED_DAYS: every changed model,
    setting or CasADi version makes a new one, 20-25 MiB for a compiled MPC."""
    cutoff = time.time() - UNUSED_DAYS * 86400
    for old in directory.glob("*.casadi"):
        with contextlib.suppress(OSError), cache_lock(lock_file(old)):
            if old.stat().st_mtime < cutoff:
                old.unlink()
                lock_file(old).unlink()


def _loads(path: Path) -> bool:
    """Whether the cached file loads (called under its lock)."""
    if not path.exists():
        return False
    try:
        ca.Function.load(str(path))
    except RuntimeError as exc:  # truncated or from an incompatible build
        log.warning("compiled-function cache %s unreadable (%s): rebuilding", path, exc)
        return False
    return True
