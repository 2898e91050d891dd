"""Write the scenario suite's own geofences into tests/scenarios/data (run it after changing
one: `python -m tests.scenarios.make_fences`). Same origin as launch/geofences/fleet.geojson,
so positions read the same; every zone names the vehicle type it binds."""

from __future__ import annotations

import json
from pathlib import Path

from fleetbus.planners.geofence import Geofence
from fleetbus.planners.geojson import to_geojson
from fleetbus.planners.zones import Zone

ORIGIN = (59.9, 10.7, 0.0)
DATA = Path(__file__).resolve().parent / "data"


def fences() -> dict[str, tuple[str, list[Zone]]]:
    """file name -> (vehicle type, zones), in ENU metres."""
    return {
        # an L-shaped drone corridor, 20 m wide, 40 m ceiling, with a tower whose
        # no-fly cylinder pokes 5 m into the first leg
        "quad_corridor.geojson": ("quadrotor", [
            Zone.polygon("corridor", [(-10, -10), (70, -10), (70, 60), (50, 60), (50, 10),
                                      (-10, 10)], ceiling_m=40.0, action="return"),
            Zone.circle_zone("tower", (30.0, -10.0), 5.0, inclusion=False, floor_m=0.0,
                             ceiling_m=50.0, action="hold", priority=1),
        ]),
        # a 14 m wide lane narrowed to 8 m by a parked van, then a right-angle bend into
        # a 24 m wide road (room for a 5 m turn radius)
        "car_lane.geojson": ("car", [
            Zone.polygon("lane-east", [(0, -7), (110, -7), (110, 7), (0, 7)], action="hold"),
            Zone.polygon("lane-north", [(86, -7), (110, -7), (110, 80), (86, 80)],
                         action="hold"),
            Zone.polygon("parked-van", [(40, 1), (46, 1), (46, 8), (40, 8)], inclusion=False,
                         action="hold", priority=1),
        ]),
        # the same lane with a bend only 14 m wide: tight, but a 5 m turn radius fits
        # inside the planner's margin
        "car_tight_bend.geojson": ("car", [
            Zone.polygon("lane-east", [(0, -7), (100, -7), (100, 7), (0, 7)], action="hold"),
            Zone.polygon("lane-north", [(86, -7), (100, -7), (100, 80), (86, 80)],
                         action="hold"),
            Zone.polygon("parked-van", [(40, 1), (46, 1), (46, 8), (40, 8)], inclusion=False,
                         action="hold", priority=1),
        ]),
        # the lane turning into a 6 m alley: once the planner's margin is off both sides
        # it is too tight for a car's 5 m turn radius
        "car_alley.geojson": ("car", [
            Zone.polygon("lane-east", [(0, -7), (100, -7), (100, 7), (0, 7)], action="hold"),
            Zone.polygon("alley", [(86, -7), (92, -7), (92, 80), (86, 80)], action="hold"),
        ]),
        # open water with an island: the way east is a 20 m passage south of it
        "ship_narrows.geojson": ("vessel", [
            Zone.polygon("water", [(-20, -30), (120, -30), (120, 30), (-20, 30)],
                         action="hold"),
            Zone.polygon("island", [(40, -10), (60, -10), (60, 31), (40, 31)],
                         inclusion=False, action="hold", priority=1),
        ]),
    }


def main() -> None:
    DATA.mkdir(exist_ok=True)
    for name, (kind, zones) in fences().items():
        doc = to_geojson(Geofence(zones, ORIGIN))
        for feature in doc["features"]:
            feature["properties"]["vehicle_types"] = [kind]
        (DATA / name).write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {DATA / name}")


if __name__ == "__main__":
    main()
