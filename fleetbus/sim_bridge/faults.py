"""Fault plans: sensor and link faults scheduled on simulation time, reproducible under
the run's seed. Pure library: the simulator node applies them and publishes the events.

A plan is a YAML list (or the same list given inline), one fault an entry:

    - {at: 10, for: 5, target: drone1/gnss, type: dropout}
    - {at: 12, target: "*/imu", type: noise, sigma: 0.5}    # every vehicle's IMU
    - {at: 20, for: 3, target: ship1, type: link_loss}       # the whole vehicle

`at` and `for` are simulation seconds (no `for`: until the end of the run). Types and
their parameters:

| type         | PX4 name     | effect on the readings while active                  |
|--------------|--------------|------------------------------------------------------|
| dropout      | off          | none are published                                   |
| delay        | delayed      | published `delay_s` later, stamped when measured     |
| noise        | garbage      | extra white noise of `sigma` (sensor units)          |
| bias         | wrong        | `offset` added (a number, or one per component)      |
| stuck        | stuck        | the first reading of the fault repeats               |
| glitch       |              | `offset` added to one reading only (an outlier)      |
| rate         | slow         | at most `rate_hz` readings per second                |
| intermittent | intermittent | each reading lost with `probability`                 |
| link_loss    |              | the vehicle: no sensor out, no command in            |

Sensor components: imu [force x, y, z (m/s²), rate x, y, z (rad/s)], gnss [east, north,
up (m)], heading [yaw (rad)], baro [altitude (m)], wheel_speed [speed (m/s)], speed_log
[surge, sway (m/s)].
"""

from __future__ import annotations

import heapq
import math
import reprlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fleetbus.launch.loader import YAML_FAULTS, yaml_fault
from fleetbus.sim_bridge.sensing import SENSORS

PX4_NAMES = {"off": "dropout", "delayed": "delay", "garbage": "noise", "wrong": "bias",
             "stuck": "stuck", "slow": "rate", "intermittent": "intermittent"}
PARAMETERS: dict[str, tuple[str, ...]] = {  # type -> its required parameters
    "dropout": (), "delay": ("delay_s",), "noise": ("sigma",), "bias": ("offset",),
    "stuck": (), "glitch": ("offset",), "rate": ("rate_hz",),
    "intermittent": ("probability",), "link_loss": (),
}
_ENTRY_KEYS = {"at", "for", "target", "type"} | {p for ps in PARAMETERS.values() for p in ps}
_SHOW = reprlib.Repr()
_SHOW.maxlevel, _SHOW.maxlist, _SHOW.maxdict, _SHOW.maxstring, _SHOW.maxlong = 2, 6, 6, 60, 40
"""How an error message shows a value from a plan: bounded, because YAML aliases make a few
hundred bytes of plan a value of billions of items (a "billion laughs"), whose full repr
took minutes and gigabytes."""


class FaultPlanError(ValueError):
    """A fault plan that cannot be applied; the message names the entry and the field."""


@dataclass
class Fault:
    """One scheduled fault, with what it did (for the end-of-run summary)."""

    index: int  # position in the plan, from 0
    type: str  # canonical type (PX4 names are translated)
    name: str  # as written in the plan
    vehicle: str
    sensor: str | None  # None: link loss of the whole vehicle
    start_s: float
    end_s: float
    delay_s: float = 0.0
    sigma: float = 0.0
    offset: np.ndarray = field(default_factory=lambda: np.zeros(1))
    rate_hz: float = 0.0
    probability: float = 0.0
    affected: int = 0  # readings (or commands) it dropped, delayed or changed
    started: bool = False
    ended: bool = False
    held: list[float] | None = None  # stuck: the value it repeats
    last_out_s: float = -math.inf  # rate: when the last reading got through

    @property
    def target(self) -> str:
        return f"{self.vehicle}/{self.sensor}" if self.sensor else self.vehicle

    def active(self, t: float) -> bool:
        return self.start_s <= t < self.end_s


def load_plan(source: str | Path | list[Any], vehicles: Mapping[str, str],
              first_index: int = 0) -> list[Fault]:
    """Faults from a YAML file (a Path), YAML text or an already parsed list, checked
    against the simulated `vehicles` ({id: type}). Raises FaultPlanError naming what is
    wrong, the file included. Entries are numbered from `first_index` (several plans in
    one run keep distinct numbers)."""
    entries: Any = source
    if isinstance(source, Path):
        try:
            return load_plan(source.read_text(), vehicles, first_index)
        except OSError as exc:
            raise FaultPlanError(f"fault plan {source}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:  # a binary file, or another encoding
            raise FaultPlanError(f"fault plan {source}: not UTF-8 text: {exc.reason} at "
                                 f"byte {exc.start}") from None
        except FaultPlanError as exc:
            raise FaultPlanError(f"{source}: {exc}") from None
    if isinstance(source, str):
        try:
            entries = yaml.safe_load(source)
        # as the graph loader: PyYAML's constructors fail on some tagged scalars with bare
        # builtin errors (`!!float ""`, `!!bool x`, a date 2020-13-45), deep nesting recurses
        except YAML_FAULTS as exc:
            raise FaultPlanError(f"fault plan is not valid YAML: {yaml_fault(exc)}") from None
        if isinstance(entries, dict) and "faults" in entries:
            entries = entries["faults"]
        if entries is None:
            return []
    if not isinstance(entries, list):
        raise FaultPlanError(f"a fault plan is a list of faults, not {type(entries).__name__}")
    faults: list[Fault] = []
    for index, entry in enumerate(entries):
        faults.extend(_parse(first_index + index, entry, vehicles))
    return faults


def _parse(index: int, entry: Any, vehicles: Mapping[str, str]) -> list[Fault]:
    where = f"fault plan entry {index}"
    if not isinstance(entry, dict):
        raise FaultPlanError(f"{where}: expected a mapping, got {_SHOW.repr(entry)}")
    unknown = set(entry) - _ENTRY_KEYS
    if unknown:  # sorted by repr: YAML keys may be numbers too, which do not sort with str
        raise FaultPlanError(f"{where}: unknown field(s) {sorted(unknown, key=repr)}")
    name = entry.get("type")
    if name is False:  # YAML 1.1 reads an unquoted `off` (PX4's name) as false
        name = "off"
    kind = PX4_NAMES.get(name, name) if isinstance(name, str) else None
    if kind not in PARAMETERS:
        raise FaultPlanError(f"{where}: unknown type {_SHOW.repr(name)} (known: "
                             f"{', '.join(PARAMETERS)}; PX4 names: {', '.join(PX4_NAMES)})")
    where = f"{where} ({name})"
    if "at" not in entry:
        raise FaultPlanError(f"{where}: needs 'at' (sim seconds)")
    foreign = set(entry) - {"at", "for", "target", "type", *PARAMETERS[kind]}
    if foreign:
        raise FaultPlanError(f"{where}: {sorted(foreign)} do not apply to {kind}")
    start = _number(entry, "at", where, minimum=0.0)
    length = _number(entry, "for", where, minimum=0.0) if "for" in entry else math.inf
    for required in PARAMETERS[kind]:
        if required not in entry:
            raise FaultPlanError(f"{where}: needs {required!r}")
    target = entry.get("target")
    if not isinstance(target, str) or not target:
        raise FaultPlanError(f"{where}: needs a target 'vehicle/sensor' or 'vehicle'")
    vehicle_part, _, sensor = target.partition("/")
    names = list(vehicles) if vehicle_part == "*" else [vehicle_part]
    faults = []
    for vehicle in names:
        if vehicle not in vehicles:
            raise FaultPlanError(f"{where}: no vehicle {vehicle!r} (vehicles: "
                                 f"{', '.join(vehicles)})")
        sensors = SENSORS[vehicles[vehicle]]
        if kind == "link_loss":
            if sensor:
                raise FaultPlanError(f"{where}: link_loss targets a whole vehicle, "
                                     f"not {target!r}")
        elif sensor not in sensors:
            raise FaultPlanError(f"{where}: {vehicle} has no sensor {sensor!r} "
                                 f"(has {', '.join(sensors)})")
        fault = Fault(index, kind, name, vehicle, sensor or None, start, start + length)
        if kind == "delay":
            fault.delay_s = _number(entry, "delay_s", where, minimum=0.0)
        elif kind == "noise":
            fault.sigma = _number(entry, "sigma", where, minimum=0.0)
        elif kind == "rate":
            fault.rate_hz = _number(entry, "rate_hz", where, minimum=0.0, strict=True)
        elif kind == "intermittent":
            fault.probability = _number(entry, "probability", where, minimum=0.0)
            if fault.probability > 1:
                raise FaultPlanError(f"{where}: probability must be at most 1")
        elif kind in ("bias", "glitch"):
            fault.offset = _offset(entry["offset"], sensors[sensor], where)
        faults.append(fault)
    return faults


def _number(entry: dict[str, Any], key: str, where: str, minimum: float,
            strict: bool = False) -> float:
    value = entry[key]
    if not _finite(value):
        raise FaultPlanError(f"{where}: {key!r} must be a finite number, "
                             f"got {_SHOW.repr(value)}")
    if value < minimum or (strict and value == minimum):
        raise FaultPlanError(f"{where}: {key!r} must be {'>' if strict else '>='} {minimum}, "
                             f"got {value}")
    return float(value)


def _finite(value: Any) -> bool:
    """A finite int or float, not a bool. YAML reads 400 digits as an int, which is beyond
    float: math.isfinite and float() raise OverflowError on it."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _offset(value: Any, components: int, where: str) -> np.ndarray:
    values = value if isinstance(value, list) else [value]
    if len(values) not in (1, components) or not all(_finite(v) for v in values):
        raise FaultPlanError(f"{where}: 'offset' must be a finite number or a list of "
                             f"{components}, got {_SHOW.repr(value)}")
    return np.broadcast_to(np.asarray(values, float), (components,)).copy()


class FaultInjector:
    """Applies a plan to sensor readings and commands. `rng` is its own stream (derived
    from the run's seed), so adding a fault does not change the noise of other sensors."""

    def __init__(self, faults: list[Fault], rng: np.random.Generator) -> None:
        self.faults = faults
        self.rng = rng
        self._by_target: dict[tuple[str, str | None], list[Fault]] = {}
        for fault in faults:
            self._by_target.setdefault((fault.vehicle, fault.sensor), []).append(fault)

    def transitions(self, t: float) -> list[tuple[Fault, str]]:
        """Faults that started or ended by time `t`, each reported once: ("start"|"end")."""
        changes = []
        for fault in self.faults:
            if not fault.started and t >= fault.start_s:
                fault.started = True
                changes.append((fault, "start"))
            if fault.started and not fault.ended and t >= fault.end_s:
                fault.ended = True
                changes.append((fault, "end"))
        return changes

    def link_lost(self, vehicle: str, t: float) -> Fault | None:
        for fault in self._by_target.get((vehicle, None), ()):
            if fault.active(t):
                return fault
        return None

    def apply(self, vehicle: str, sensor: str, t: float,
              values: list[float]) -> tuple[list[float], float] | None:
        """The reading as it leaves the sensor, and its extra delay (s); None if lost."""
        faults = self._by_target.get((vehicle, sensor))
        if not faults:
            return values, 0.0
        delay = 0.0
        for fault in faults:
            if not fault.active(t):
                continue
            kind = fault.type
            if kind == "dropout":
                fault.affected += 1
                return None
            if kind == "rate":
                if t - fault.last_out_s < 1.0 / fault.rate_hz - 1e-9:
                    fault.affected += 1
                    return None
                fault.last_out_s = t
                continue
            if kind == "intermittent":
                if self.rng.random() < fault.probability:
                    fault.affected += 1
                    return None
                continue
            if kind == "glitch":
                if fault.affected == 0:  # the first reading of the fault only
                    fault.affected = 1
                    values = (np.asarray(values) + fault.offset).tolist()
                continue
            fault.affected += 1
            if kind == "delay":
                delay += fault.delay_s
            elif kind == "noise":
                values = (np.asarray(values) + self.rng.normal(0.0, fault.sigma,
                                                               len(values))).tolist()
            elif kind == "stuck":
                if fault.held is None:
                    fault.held = list(values)
                values = list(fault.held)
            elif kind == "bias":
                values = (np.asarray(values) + fault.offset).tolist()
        return values, delay

    def summary(self) -> list[dict[str, Any]]:
        """One row a fault: what, where, when, and how many readings it touched."""
        return [{"index": f.index, "type": f.name, "target": f.target, "start_s": f.start_s,
                 "end_s": f.end_s, "started": f.started, "ended": f.ended,
                 "affected": f.affected} for f in self.faults]


class DelayLine:
    """Messages held back until a later simulation time (sensor latency, delay faults),
    released in time order; ties keep their order of arrival."""

    def __init__(self) -> None:
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._count = 0

    def push(self, release_s: float, send: Callable[[], None]) -> None:
        self._count += 1
        heapq.heappush(self._queue, (release_s, self._count, send))

    def release(self, t: float) -> None:
        while self._queue and self._queue[0][0] <= t + 1e-12:
            heapq.heappop(self._queue)[2]()

    def __len__(self) -> int:
        return len(self._queue)
