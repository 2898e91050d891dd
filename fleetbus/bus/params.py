"""Typed, declared node parameters, and the messages of the parameter services.

A parameter's type is the type of its default. Values set from outside (launch files, the
CLI) are checked against it: an int is accepted for a float, nothing else is converted.
A change callback may refuse a value by raising ValueError; the old value then stays.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from fleetbus.messages.base import Message

T = TypeVar("T")

PARAM_TYPES = (bool, int, float, str, list, dict)
PARAM_SERVICES = ("list_params", "set_param")  # served by every node under its own name


class ParamError(ValueError):
    """A parameter value that does not fit its declaration."""


class Param(Generic[T]):
    def __init__(self, name: str, default: T, description: str = "") -> None:
        if type(default) not in PARAM_TYPES:
            raise ParamError(
                f"parameter {name!r}: default {default!r} must be one of "
                + ", ".join(t.__name__ for t in PARAM_TYPES)
            )
        self.name = name
        self.type: type = type(default)
        self.value: T = default
        self.description = description
        self.callbacks: list[Callable[[T], Any]] = []

    def check(self, value: Any) -> T:
        """Return `value` converted to this parameter's type, or raise ParamError."""
        if type(value) is self.type:
            return value
        if self.type is float and type(value) is int:
            return float(value)  # type: ignore[return-value]
        raise ParamError(
            f"parameter {self.name!r} is {self.type.__name__}, "
            f"got {type(value).__name__} {value!r}"
        )

    def set(self, value: Any) -> None:
        new = self.check(value)
        old, self.value = self.value, new
        try:
            for callback in self.callbacks:
                callback(new)
        except ValueError as exc:
            self.value = old
            raise ParamError(f"parameter {self.name!r} refused {value!r}: {exc}") from None


class ParamListRequest(Message):
    __msgtype__ = "fleetbus/ParamListRequest"


class ParamList(Message):
    __msgtype__ = "fleetbus/ParamList"
    names: list[str] = []
    types: list[str] = []
    values: list[Any] = []
    descriptions: list[str] = []


class ParamSetRequest(Message):
    __msgtype__ = "fleetbus/ParamSetRequest"
    name: str
    value: Any


class ParamSetResult(Message):
    __msgtype__ = "fleetbus/ParamSetResult"
    ok: bool
    error: str = ""
