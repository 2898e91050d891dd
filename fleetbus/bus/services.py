"""Request/response services between nodes.

Wire format over DEALER (client) → ROUTER (the serving node's service socket):
request ``[call_id, service name, request schema hash, payload, *buffers]``, reply
``[call_id, b"ok" | b"error", payload or UTF-8 error text, *buffers]`` — buffers are the
numpy array fields, as on topics. Every call has a timeout. A service declared
`authenticated_only` refuses requests that came over a tcp link without CurveZMQ.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from fleetbus.messages.base import Message
from fleetbus.messages.codec import Codec, DecodeError, to_builtins

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)

OK = b"ok"
ERROR = b"error"


class ServiceError(RuntimeError):
    """A service call that did not produce a response."""


class ServiceNotFound(ServiceError):
    pass


class ServiceTimeout(ServiceError):
    pass


class ServiceFailed(ServiceError):
    """The server answered with an error (bad request, handler raised)."""


def hash_bytes(schema_hash: int) -> bytes:
    return schema_hash.to_bytes(8, "big")


class Service(Generic[Req, Resp]):
    """A service this node serves."""

    def __init__(
        self,
        name: str,
        request_type: type[Req],
        response_type: type[Resp],
        handler: Callable[[Req], Resp],
        authenticated_only: bool = False,
    ) -> None:
        self.name = name
        self.request = Codec(request_type)
        self.response = Codec(response_type)
        self.handler = handler
        self.authenticated_only = authenticated_only
        self.calls = 0
        self.errors = 0

    def invoke(self, request: Req) -> Resp:
        """Run the handler and check that it answered with the declared type."""
        self.calls += 1
        try:
            response = self.handler(request)
            if type(response) is not self.response.cls:
                raise ServiceFailed(
                    f"service {self.name} handler returned {type(response).__name__}, "
                    f"declared {self.response.type_name}"
                )
            return response
        except Exception:
            self.errors += 1
            raise

    def handle(
        self, request_hash: bytes, payload: bytes, buffers: list[Any]
    ) -> tuple[bytes, list[Any]]:
        """Answer one request from the wire: (status, [body, *buffers])."""
        if request_hash != hash_bytes(self.request.schema_hash):
            self.errors += 1
            return ERROR, [(
                f"service {self.name} takes {self.request.type_name}"
                f"#{self.request.schema_hash:016x}; the request has another type"
            ).encode()]
        try:
            request = self.request.decode(payload, buffers)
        except DecodeError as exc:
            self.errors += 1
            return ERROR, [f"service {self.name}: undecodable request: {exc}".encode()]
        try:
            response = self.invoke(request)
            body, out = self.response.encode(response)  # e.g. an int too big for MessagePack
        except Exception as exc:
            return ERROR, [f"service {self.name} failed: {type(exc).__name__}: {exc}".encode()]
        return OK, [body, *out]


@dataclass
class ServiceTarget:
    """Where a service is served, as the registry reported it."""

    name: str
    node: str
    url: str
    request_type: str
    request_hash: int
    response_type: str
    server_key: str = ""  # the serving node's CurveZMQ key, for a tcp url


def decode_response(codec: Codec | None, body: bytes, buffers: list[Any]) -> Any:
    """The response as its class, or as plain data when the class is unknown here."""
    return to_builtins(body, buffers) if codec is None else codec.decode(body, buffers)
