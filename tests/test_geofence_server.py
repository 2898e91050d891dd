"""One geofence file for a mixed fleet: the server publishes each vehicle type the zones
that bind it, all in the file's frame, and refuses a bad file by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleetbus.messages import Geofence
from fleetbus.nodes.geofence_server import GeofenceServer
from fleetbus.planners.geojson import load_geojson
from fleetbus.planners.zones import GeofenceError
from tests.helpers import wait_until

ORIGIN = {"lat_deg": 59.9, "lon_deg": 10.7, "alt_m": 0.0}


def square(lon: float, lat: float, d: float) -> list[list[list[float]]]:
    return [[[lon, lat], [lon + d, lat], [lon + d, lat + d], [lon, lat + d], [lon, lat]]]


def feature(zone_id: str, coords: list, **props) -> dict:
    return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": coords},
            "properties": {"id": zone_id, **props}}


FLEET = {"type": "FeatureCollection", "fleetbus:origin": ORIGIN, "features": [
    feature("area", square(10.69, 59.89, 0.02)),
    feature("water", square(10.695, 59.895, 0.005), vehicle_types=["vessel"]),
    feature("roads", square(10.70, 59.90, 0.005), vehicle_types=["car"]),
    feature("no-fly", square(10.70, 59.895, 0.002), inclusion=False,
            vehicle_types=["quadrotor"], floor_m=0, ceiling_m=50),
]}


def zone_ids(msg: Geofence) -> set[str]:
    return {z.zone_id for z in msg.zones}


def test_a_vehicle_type_gets_the_zones_that_bind_it() -> None:
    assert {z.zone_id for z in load_geojson(FLEET, None, "vessel").zones} == {"area", "water"}
    assert {z.zone_id for z in load_geojson(FLEET).zones} == {"area", "water", "roads",
                                                              "no-fly"}
    with pytest.raises(GeofenceError, match=r"feature 1.*'vehicle_types' must be a list"):
        load_geojson({**FLEET, "features": [FLEET["features"][0],
                                            feature("x", square(10.7, 59.9, 0.001),
                                                    vehicle_types="boat")]})


def test_the_server_publishes_one_fence_per_type_in_one_frame(bus, tmp_path: Path) -> None:
    path = tmp_path / "fleet.geojson"
    path.write_text(json.dumps(FLEET))
    got: dict[str, Geofence] = {}

    def setup(node):
        for topic in ("/geofence", "/geofence/quadrotor", "/geofence/vessel", "/geofence/car"):
            node.subscribe(topic, Geofence, lambda m, t=topic: got.__setitem__(t, m))
    bus.node("rec", setup)
    bus.start(GeofenceServer("fence", params={"file": str(path)}))
    wait_until(lambda: len(got) == 4, what="four latched fences")
    assert zone_ids(got["/geofence"]) == {"area", "water", "roads", "no-fly"}
    assert zone_ids(got["/geofence/vessel"]) == {"area", "water"}
    assert zone_ids(got["/geofence/car"]) == {"area", "roads"}
    assert zone_ids(got["/geofence/quadrotor"]) == {"area", "no-fly"}
    for msg in got.values():
        assert (msg.origin_lat_deg, msg.origin_lon_deg) == (59.9, 10.7)


@pytest.mark.parametrize(("params", "named"), [
    ({}, "names no geofence file"),
    ({"file": "/nonexistent/fence.geojson"}, "/nonexistent/fence.geojson"),
    ({"file": "x.geojson", "vehicle_types": ["boat"]}, "unknown vehicle_types ['boat']"),
])
def test_a_bad_configuration_fails_setup_by_name(bus, params: dict, named: str) -> None:
    node = bus.start(GeofenceServer("fence", params=params), check=False)
    assert named in str(node.setup_error)
