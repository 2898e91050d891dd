"""The run's trajectories over its geofence zones, as a PNG: the picture that shows at a
glance where a vehicle went, where it was allowed to go, and where it broke a rule.

Drawn on the Agg canvas of a bare matplotlib Figure, never through pyplot: no display is
needed and no global backend is switched under whoever imported us.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import shapely
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle, Patch, PathPatch
from matplotlib.path import Path as MplPath
from shapely.geometry import Polygon

from fleetbus.planners.zones import Zone

if TYPE_CHECKING:
    from fleetbus.missions.report import VehicleRun

FIGSIZE_IN = (12.0, 9.0)
DPI = 120
# Vehicles of one type share a colour family, so the fleet's make-up reads off the plot.
FAMILIES = {"quadrotor": "Purples", "vessel": "Blues", "car": "Greens"}
OTHER_FAMILY = "Oranges"
INCLUSION_STYLE = {"facecolor": "#d9d9d9", "edgecolor": "#707070", "alpha": 0.45,
                   "linewidth": 1.0, "zorder": 1}
EXCLUSION_STYLE = {"facecolor": "#ff000018", "edgecolor": "red", "hatch": "//",
                   "linewidth": 1.0, "zorder": 2}


def plot_trajectories(path: Path, runs: Sequence[VehicleRun], title: str) -> Path:
    """Draw the trajectories over the zones and save the PNG at `path`."""
    trajectory_figure(runs, title).savefig(path, dpi=DPI)
    return path


def trajectory_figure(runs: Sequence[VehicleRun], title: str) -> Figure:
    """Every vehicle's truth trajectory (x east, y north, equal scale) with start and end
    markers and its first planned path dashed, over every zone of every fence, each zone
    once (by id)."""
    fig = Figure(figsize=FIGSIZE_IN, dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for zone in unique_zones(run.fence.zones for run in runs if run.fence is not None):
        _draw_zone(ax, zone)
    colours = vehicle_colours([(run.vehicle_id, run.vehicle_type) for run in runs])
    for run in runs:
        _draw_run(ax, run, colours[run.vehicle_id])
    ax.set_aspect("equal", adjustable="datalim")
    ax.autoscale_view()
    ax.set_xlabel("x east (m)")
    ax.set_ylabel("y north (m)")
    ax.set_title(title)
    ax.grid(True, linewidth=0.3)
    ax.legend(handles=ax.get_legend_handles_labels()[0] + _key_handles(), loc="best",
              fontsize="small")
    return fig


def unique_zones(zone_sets: Iterable[Sequence[Zone]]) -> list[Zone]:
    """The zones of several fences, each id once (the first seen): vehicles sharing a
    fence would otherwise stack the same hatching many times over."""
    seen: dict[str, Zone] = {}
    for zones in zone_sets:
        for zone in zones:
            seen.setdefault(zone.zone_id, zone)
    return list(seen.values())


def vehicle_colours(vehicles: Sequence[tuple[str, str]]) -> dict[str, tuple]:
    """A colour per vehicle id: its type's family, shaded apart within the family."""
    by_type: dict[str, list[str]] = {}
    for vehicle_id, vehicle_type in vehicles:
        by_type.setdefault(vehicle_type, []).append(vehicle_id)
    colours = {}
    for vehicle_type, ids in by_type.items():
        cmap = colormaps[FAMILIES.get(vehicle_type, OTHER_FAMILY)]
        shades = np.linspace(0.55, 0.95, len(ids)) if len(ids) > 1 else [0.8]
        colours.update({vid: cmap(shade) for vid, shade in zip(ids, shades, strict=True)})
    return colours


def _draw_zone(ax: Axes, zone: Zone) -> None:
    style = INCLUSION_STYLE if zone.inclusion else EXCLUSION_STYLE
    if zone.circle is not None:
        cx, cy, r = zone.circle
        ax.add_patch(Circle((cx, cy), r, **style))
    else:
        ax.add_patch(PathPatch(_polygon_path(zone.shape), **style))
    anchor = zone.shape.representative_point()
    ax.annotate(f"{zone.zone_id}{_band(zone)}", (anchor.x, anchor.y), fontsize="x-small",
                color="#505050", ha="center", va="center", zorder=3)


def _band(zone: Zone) -> str:
    """The altitude band under the zone's name: the plot is flat, the fence is not."""
    low, high = math.isfinite(zone.floor_m), math.isfinite(zone.ceiling_m)
    if low and high:
        return f"\n{zone.floor_m:g}..{zone.ceiling_m:g} m"
    if high:
        return f"\nbelow {zone.ceiling_m:g} m"
    return f"\nabove {zone.floor_m:g} m" if low else ""


def _polygon_path(polygon: Polygon) -> MplPath:
    """A polygon with its holes as one compound path: Zone shapes are oriented (outline
    counter-clockwise, holes clockwise), so the nonzero fill leaves the holes empty."""
    vertices, codes = [], []
    for ring in shapely.get_rings(polygon):
        xy = shapely.get_coordinates(ring)
        vertices.append(xy)
        codes += [MplPath.MOVETO] + [MplPath.LINETO] * (len(xy) - 2) + [MplPath.CLOSEPOLY]
    return MplPath(np.concatenate(vertices), codes)


def _draw_run(ax: Axes, run: VehicleRun, colour: tuple) -> None:
    truth = np.asarray(run.truth, float).reshape(-1, 4)
    label = f"{run.vehicle_id} ({run.vehicle_type})"
    if run.planned_paths:
        plan = np.asarray(run.planned_paths[0], float).reshape(-1, 3)
        ax.plot(plan[:, 0], plan[:, 1], linestyle="--", linewidth=0.8, color=colour,
                alpha=0.7, zorder=4)
    if len(truth) == 0:
        ax.plot([], [], color=colour, label=label)  # still named in the legend
        return
    ax.plot(truth[:, 1], truth[:, 2], color=colour, linewidth=1.6, label=label, zorder=5)
    ax.plot(*truth[0, 1:3], marker="o", color=colour, markeredgecolor="black", zorder=6)
    ax.plot(*truth[-1, 1:3], marker="s", color=colour, markeredgecolor="black", zorder=6)


def _key_handles() -> list:
    """Legend entries for what is not a vehicle: markers and zone kinds."""
    return [
        Line2D([], [], marker="o", linestyle="", color="white", markeredgecolor="black",
               label="start"),
        Line2D([], [], marker="s", linestyle="", color="white", markeredgecolor="black",
               label="end"),
        Line2D([], [], linestyle="--", color="grey", label="first planned path"),
        Patch(label="inclusion zone", **INCLUSION_STYLE),
        Patch(label="exclusion zone", **EXCLUSION_STYLE),
    ]
