"""CurveZMQ on tcp links: this host's keys, the peers it accepts, and how sockets use them.

Local links (inproc, ipc) stay plain: they never leave the host, and the run directory
(mode 0700) keeps other users away from the socket files. When FLEETBUS_KEYS names a keys
directory, every tcp endpoint is a CurveZMQ server that accepts only the client keys
authorized there (and this host's own), and every tcp connection is a CurveZMQ client:
tcp links are then encrypted and both ends authenticated.

ZeroMQ reads a socket's security options when bind() or connect() opens an endpoint, so
one socket serves ipc in the clear and tcp encrypted: `bind` and `connect` set them for
each endpoint they open. A keys directory (pyzmq certificate files):

    DIR/NAME.key             this host's public certificate: give it to its peers
    DIR/NAME.key_secret      its secret certificate, mode 0600: never copy it
    DIR/authorized/*.key     public certificates of the peers this host accepts

A client must know the server's key before it connects. Nodes advertise theirs in their
registration (`NodeInfo.curve_key`): a node reads the graph from its local registry, which
heard about other hosts from their registries over authenticated links. A registry URL
names the key its server must prove to hold after a '#': ``tcp://10.0.0.5:7400#hostA`` is
the certificate authorized as hostA; without a name, this host's own key (a fleet that
shares one key pair).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import zmq
from zmq.auth import create_certificates, load_certificate
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

from fleetbus.cli_error import CliError

log = logging.getLogger("fleetbus.security")

PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"
AUTHORIZED = "authorized"
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")

OnRefused = Callable[[str, str], None]
"""Called with (client key, client address) when a handshake is refused; with ("", the
server's endpoint) for a peer turned away before it showed a key (no CurveZMQ)."""


class KeysError(CliError):
    """A keys directory or certificate that cannot be used."""


@dataclass(frozen=True)
class Keys:
    """This host's CurveZMQ identity (Z85 keys) and where its authorized peers are."""

    directory: Path
    name: str
    public: bytes
    secret: bytes

    @property
    def authorized_dir(self) -> Path:
        return self.directory / AUTHORIZED

    def authorized(self) -> dict[str, bytes]:
        """Authorized peers' public keys by certificate name, read now: a certificate
        added with `fleetbus keys authorize` counts from the next handshake on."""
        peers = {}
        for path in sorted(self.authorized_dir.glob("*" + PUBLIC_SUFFIX)):
            try:
                peers[path.name[: -len(PUBLIC_SUFFIX)]] = _certificate(path)[0]
            except KeysError as exc:  # one bad file must not lock out the others
                log.error("ignoring authorized certificate %s: %s", path, exc)
        return peers

    def server_key(self, name: str) -> bytes:
        """The public key of the certificate called `name` (this host's own when empty)."""
        if not name or name == self.name:
            return self.public
        try:
            return self.authorized()[name]
        except KeyError:
            raise KeysError(f"no certificate {name!r} in {self.authorized_dir}: authorize "
                            f"it with `fleetbus keys authorize {name}{PUBLIC_SUFFIX}`") from None


@functools.cache
def load_keys(directory: Path) -> Keys:
    """The identity in `directory`, which must hold exactly one secret certificate that
    only its owner can read."""
    secrets = sorted(directory.glob("*" + SECRET_SUFFIX))
    if len(secrets) != 1:
        found = ", ".join(p.name for p in secrets) or "none"
        raise KeysError(f"{directory} must hold one secret certificate *{SECRET_SUFFIX} "
                        f"(found: {found}); make one with `fleetbus keys generate --dir "
                        f"{directory}`")
    path = secrets[0]
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise KeysError(f"{path} is readable by other users: chmod 600 it (and consider "
                        "the key compromised)")
    public, secret = _certificate(path)
    if secret is None:
        raise KeysError(f"{path} holds no secret key")
    return Keys(directory, path.name[: -len(SECRET_SUFFIX)], public, secret)


def generate(directory: Path, name: str, replace: bool = False) -> Keys:
    """Make a new key pair called `name` in `directory` (created mode 0700)."""
    _check_name(name)
    _private_dir(directory)
    _private_dir(directory / AUTHORIZED)
    existing = sorted(directory.glob("*" + SECRET_SUFFIX))
    if existing and not replace:
        raise KeysError(f"{directory} already holds the key pair {existing[0].name}; "
                        "--force replaces it (peers must then authorize the new one)")
    for path in existing:
        path.unlink()
        path.with_name(path.name[: -len(SECRET_SUFFIX)] + PUBLIC_SUFFIX).unlink(missing_ok=True)
    # The directory is 0700 already, so the secret file is never readable by others, even
    # before the chmod (pyzmq writes it with the process's umask).
    public_file, secret_file = create_certificates(directory, name)
    os.chmod(secret_file, 0o600)
    os.chmod(public_file, 0o644)
    load_keys.cache_clear()
    return load_keys(directory)


def authorize(directory: Path, cert_file: Path,
              replace: bool = False) -> tuple[Path, bytes, bool]:
    """Accept the peer whose public certificate is `cert_file`: copy it into the
    authorized directory under its own name. Returns the copy, the peer's public key and
    whether it is new."""
    public, secret = _certificate(cert_file)
    if secret is not None:
        raise KeysError(f"{cert_file} holds a secret key: authorize the peer's public "
                        f"certificate (*{PUBLIC_SUFFIX}), and never copy a secret one")
    name = cert_file.name.removesuffix(PUBLIC_SUFFIX)
    _check_name(name)
    _private_dir(directory)
    _private_dir(directory / AUTHORIZED)
    target = directory / AUTHORIZED / (name + PUBLIC_SUFFIX)
    if target.exists():
        if _certificate(target)[0] == public:
            return target, public, False
        if not replace:
            raise KeysError(f"another key is authorized as {name!r} ({target}); --force "
                            "replaces it")
    shutil.copyfile(cert_file, target)
    os.chmod(target, 0o644)
    return target, public, True


def _certificate(path: Path) -> tuple[bytes, bytes | None]:
    """The (public, secret or None) Z85 keys of a certificate file, checked: pyzmq's
    reader takes whatever text follows 'public-key ='."""
    try:
        public, secret = load_certificate(path)
        for key in (public, secret or public):
            if len(z85.decode(key)) != 32:
                raise ValueError(f"{path}: a key is not 32 bytes")
    except (OSError, ValueError, KeyError) as exc:  # z85 raises KeyError for a bad char
        raise KeysError(f"not a usable certificate: {exc}") from None
    return public, secret


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise KeysError(f"certificate name {name!r}: use letters, digits, '_', '.', '-'")


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


# -- sockets ---------------------------------------------------------------------------------


def bind(sock: zmq.Socket, url: str, keys: Keys | None, domain: str,
         on_refused: OnRefused) -> str:
    """Bind `url` and return the endpoint bound (with the port chosen for ``:*``). With
    `keys`, a tcp endpoint is a CurveZMQ server whose refusals go to `on_refused`, under
    ZAP `domain` (one per server socket); every other endpoint is plain."""
    address = url.partition("#")[0] if url.startswith("tcp://") else url
    if keys is not None and address.startswith("tcp://"):
        _serve(sock.context, domain, keys, on_refused).watcher.watch(sock, on_refused)
        sock.curve_secretkey = keys.secret
        sock.curve_publickey = keys.public
        sock.curve_server = True
        sock.zap_domain = domain.encode()
        # Without a ZAP handler libzmq would admit any key; enforced, it admits none.
        sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
    else:
        _plain(sock)
    sock.bind(address)
    return sock.getsockopt(zmq.LAST_ENDPOINT).decode()


def connect(sock: zmq.Socket, url: str, keys: Keys | None, server_key: str = "") -> None:
    """Connect to `url`. With `keys`, a tcp endpoint is reached as a CurveZMQ client that
    expects the server to hold `server_key` (Z85, as nodes advertise it), else the key the
    URL names after '#', else this host's own."""
    address, _, name = url.partition("#") if url.startswith("tcp://") else (url, "", "")
    if keys is not None and address.startswith("tcp://"):
        sock.curve_secretkey = keys.secret
        sock.curve_publickey = keys.public
        sock.curve_serverkey = server_key.encode() if server_key else keys.server_key(name)
    else:
        _plain(sock)
    sock.connect(address)


def release(context: zmq.Context, domain: str) -> None:
    """The server socket(s) of `domain` closed: the last one of a context stops its
    authenticator."""
    with _lock:
        auth = _authenticators.get(context)
        if auth is None:
            return
        # Its check stays registered with pyzmq: no handshake reaches a closed socket, and
        # removing it could race with one the authenticator's thread is checking.
        auth.serving.discard(domain)
        if not auth.serving:
            del _authenticators[context]
            # The ZAP handler first: with the monitors closed before it, its endpoint now
            # and then stayed bound, and the context's next handler could not start
            # ("Address already in use", 1 run in 4 of test_security.py; 0 in 32 so).
            auth.stop()
            auth.watcher.stop()


def _plain(sock: zmq.Socket) -> None:
    """Back to the NULL mechanism for the next endpoint, if an earlier one used CurveZMQ."""
    if sock.get(zmq.MECHANISM) != zmq.NULL:
        sock.curve_server = False  # libzmq: this also selects the NULL mechanism
        sock.zap_domain = b""
        sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 0)


class _Authenticator(ThreadAuthenticator):
    """pyzmq's ZAP handler thread, noting the address of the handshake it checks: the
    credentials callback is given only the domain and the key. ZeroMQ asks the handler of
    the socket's own context, so there is one per context, shared by its server sockets."""

    def __init__(self, context: zmq.Context) -> None:
        super().__init__(context, log=log)
        self.address = ""
        self.serving: set[str] = set()  # ZAP domains of open server sockets
        self.watcher = _HandshakeWatcher()

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        self.address = msg[3].decode(errors="replace") if len(msg) > 3 else "?"
        await super().handle_zap_message(msg)


_lock = threading.Lock()
_authenticators: dict[zmq.Context, _Authenticator] = {}


def _serve(context: zmq.Context, domain: str, keys: Keys,
           on_refused: OnRefused) -> _Authenticator:
    with _lock:
        auth = _authenticators.get(context)
        if auth is None:
            auth = _authenticators[context] = _Authenticator(context)
            auth.start()
        auth.serving.add(domain)
        auth.configure_curve_callback(domain, _Gate(auth, keys, on_refused))
        return auth


class _Gate:
    """The credentials check of one ZAP domain (pyzmq calls `callback`)."""

    def __init__(self, auth: _Authenticator, keys: Keys, on_refused: OnRefused) -> None:
        self.auth = auth
        self.keys = keys
        self.on_refused = on_refused

    def callback(self, domain: str, key: bytes) -> bool:
        # Runs on the authenticator's thread, where an exception would stop every check.
        try:
            if key == self.keys.public or key in self.keys.authorized().values():
                return True
            self.on_refused(key.decode(errors="replace"), self.auth.address)
        except Exception:
            log.exception("CurveZMQ check of a %s peer failed; refusing it", domain)
        return False


# Handshakes that failed before the ZAP handler was asked (a refused key is
# HANDSHAKE_FAILED_AUTH, reported by _Gate): a peer without CurveZMQ, one that expects
# another server key, or garbage.
_PRE_AUTH_FAILURES = zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL


class _HandshakeWatcher:
    """Reads the monitors of a context's CurveZMQ server sockets on a thread of its own:
    ZeroMQ turns away a peer that does not speak CurveZMQ before any key is checked, and
    only a socket monitor sees it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._added: list[tuple[zmq.Socket, OnRefused, int]] = []
        self._watched: set[int] = set()  # ids of the server sockets monitored
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fleetbus-curve-watch",
                                        daemon=True)
        self._thread.start()

    def watch(self, sock: zmq.Socket, on_refused: OnRefused) -> None:
        with self._lock:
            if id(sock) in self._watched:  # another endpoint of the same socket
                return
            self._watched.add(id(sock))
            events = _PRE_AUTH_FAILURES | zmq.EVENT_MONITOR_STOPPED
            # handed to the watcher's thread, which alone uses it from now on
            self._added.append((sock.get_monitor_socket(events), on_refused, id(sock)))

    def stop(self) -> None:
        """Closes the monitors (before the context can be terminated)."""
        self._stopping.set()
        self._thread.join()

    def _run(self) -> None:
        poller = zmq.Poller()
        monitors: dict[zmq.Socket, tuple[OnRefused, int]] = {}
        while not self._stopping.is_set():
            with self._lock:
                added, self._added = self._added, []
            for monitor, on_refused, sock_id in added:
                poller.register(monitor, zmq.POLLIN)
                monitors[monitor] = (on_refused, sock_id)
            for monitor, _ in poller.poll(100):
                event = recv_monitor_message(monitor)
                on_refused, sock_id = monitors[monitor]
                if event["event"] == zmq.EVENT_MONITOR_STOPPED:  # its socket was closed
                    poller.unregister(monitor)
                    del monitors[monitor]
                    monitor.close(linger=0)
                    with self._lock:
                        self._watched.discard(sock_id)  # the id may name a new socket
                    continue
                try:
                    on_refused("", event["endpoint"].decode(errors="replace"))
                except Exception:  # a report must not stop the watching
                    log.exception("reporting a failed CurveZMQ handshake failed")
        with self._lock:
            closing = [*monitors, *(monitor for monitor, _, _ in self._added)]
        for monitor in closing:
            monitor.close(linger=0)


def refusal(key: str, address: str) -> str:
    """What to say about a refused tcp peer (see OnRefused)."""
    if not key:
        return (f"refused a tcp peer on {address} before it showed a key: it does not use "
                "CurveZMQ (FLEETBUS_KEYS unset?), or expects another server key")
    return (f"refused tcp peer {address}: its key {key} is not authorized "
            "(`fleetbus keys authorize` its certificate to accept it)")
