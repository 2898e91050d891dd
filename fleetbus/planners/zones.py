"""Geofence zones: a polygon (with holes) or a circle in the local ENU frame, with its own
altitude band, inclusion or exclusion, a breach action and a priority.

Every zone is checked when it is made, so an impossible fence fails at load time with the
zone named, never in flight."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import shapely
from shapely.geometry import Point, Polygon
from shapely.geometry.polygon import orient

Action = Literal["report", "hold", "return", "land"]
ACTIONS: tuple[str, ...] = ("report", "hold", "return", "land")
# Segments per quarter circle when a circle becomes a polygon: the polygon is within
# 0.2 % of the radius of the true circle.
CIRCLE_QUAD_SEGS = 16


class GeofenceError(ValueError):
    """An impossible or malformed geofence; the message names the zone and the fault."""


@dataclass(frozen=True)
class Zone:
    """One zone. `shape` is the polygon used for every query; for a circle it is the
    conservative polygon (inscribed for an inclusion, circumscribed for an exclusion), so
    the approximation can only make the fence stricter."""

    zone_id: str
    shape: Polygon
    inclusion: bool = True
    floor_m: float = -math.inf
    ceiling_m: float = math.inf
    action: Action = "report"
    priority: int = 0
    circle: tuple[float, float, float] | None = field(default=None, compare=False)

    @classmethod
    def polygon(cls, zone_id: str, outline: Sequence[Sequence[float]],
                holes: Sequence[Sequence[Sequence[float]]] = (), **attributes) -> Zone:
        """A polygon zone from ENU vertices (x, y[, z]; z is ignored)."""
        rings = [_ring(zone_id, "outline", outline)]
        rings += [_ring(zone_id, f"hole {k}", hole) for k, hole in enumerate(holes)]
        shape = Polygon(rings[0], rings[1:])
        if not shape.is_valid:
            raise GeofenceError(f"zone {zone_id!r}: polygon is not simple: "
                                f"{shapely.is_valid_reason(shape)}")
        if shape.area <= 0.0:
            raise GeofenceError(f"zone {zone_id!r}: polygon has no area")
        return cls(zone_id, orient(shape, 1.0), **attributes)

    @classmethod
    def circle_zone(cls, zone_id: str, center: Sequence[float], radius_m: float,
                    **attributes) -> Zone:
        """A circle zone around an ENU centre (x, y[, z]; z is ignored)."""
        cx, cy = _finite(zone_id, "centre", center[:2])
        if not (math.isfinite(radius_m) and radius_m > 0.0):
            raise GeofenceError(f"zone {zone_id!r}: circle radius must be positive and "
                                f"finite, got {radius_m}")
        inclusion = attributes.get("inclusion", True)
        # The polygon's edges cut inside the circle by r(1 - cos(a/2)), a = the angle of
        # one edge; scaling by 1/cos(a/2) puts them on the circle instead.
        half_edge = math.pi / (4 * CIRCLE_QUAD_SEGS)
        r = radius_m if inclusion else radius_m / math.cos(half_edge)
        shape = Point(cx, cy).buffer(r, quad_segs=CIRCLE_QUAD_SEGS)
        return cls(zone_id, orient(shape, 1.0), circle=(cx, cy, radius_m), **attributes)

    def __post_init__(self) -> None:
        if not self.zone_id:
            raise GeofenceError("a zone has an empty zone_id")
        if self.action not in ACTIONS:
            raise GeofenceError(f"zone {self.zone_id!r}: unknown breach action "
                                f"{self.action!r} (one of {', '.join(ACTIONS)})")
        for name in ("floor_m", "ceiling_m"):
            if math.isnan(getattr(self, name)):
                raise GeofenceError(f"zone {self.zone_id!r}: {name} is NaN")
        if self.floor_m >= self.ceiling_m:
            raise GeofenceError(f"zone {self.zone_id!r}: floor {self.floor_m} m is not below "
                                f"its ceiling {self.ceiling_m} m")

    def active_at(self, z: np.ndarray) -> np.ndarray:
        """Whether the zone's altitude band holds each altitude (band edges included)."""
        return (z >= self.floor_m) & (z <= self.ceiling_m)

    @property
    def has_band(self) -> bool:
        return math.isfinite(self.floor_m) or math.isfinite(self.ceiling_m)


def _finite(zone_id: str, what: str, values: Sequence[float]) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError) as exc:
        raise GeofenceError(f"zone {zone_id!r}: {what} is not numeric: {values!r}") from exc
    if not all(math.isfinite(v) for v in out):
        raise GeofenceError(f"zone {zone_id!r}: {what} has a non-finite coordinate: {out}")
    return out


def _ring(zone_id: str, what: str, points: Sequence[Sequence[float]]) -> list[tuple]:
    ring = [_finite(zone_id, f"{what} vertex {k}", p[:2]) for k, p in enumerate(points)]
    if len(ring) > 1 and ring[0] == ring[-1]:
        ring.pop()  # a closed ring repeats its first vertex; shapely closes it anyway
    if len(set(ring)) < 3:
        raise GeofenceError(f"zone {zone_id!r}: {what} needs at least 3 distinct vertices, "
                            f"got {len(set(ring))}")
    return ring
