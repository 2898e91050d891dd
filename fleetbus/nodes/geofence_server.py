"""The geofence server: one GeoJSON file fences a whole fleet.

It publishes, latched, the whole fence on `topic` (default `/geofence`: for displays and
recordings) and, per vehicle type in `vehicle_types`, the zones that bind that type on
`<topic>/<type>` (a zone's `vehicle_types` property says which; see
fleetbus.planners.geojson): a vehicle's planner, guard and mission manager subscribe to
`/geofence/${vehicle_type}`. Every fence carries the file's origin, so all vehicles share
one local frame.

Parameters: `file` (GeoJSON, relative to the working directory), `origin` ([lat, lon,
alt]; default the file's), `topic`, `vehicle_types`. A file that cannot be read or holds
an impossible zone fails setup, naming the file and the zone.
"""

from __future__ import annotations

from fleetbus.bus.node import Node
from fleetbus.messages import Geofence as GeofenceMsg
from fleetbus.messages import Header
from fleetbus.nodes.conversions import fence_to_msg
from fleetbus.planners.geojson import VEHICLE_TYPES, load_geojson
from fleetbus.planners.zones import GeofenceError


class GeofenceServer(Node):
    def setup(self) -> None:
        path = self.param("file", "", "GeoJSON geofence file").value
        origin = self.param("origin", [], "[lat, lon, alt]; default the file's").value or None
        topic = self.param("topic", "/geofence").value
        types = self.param("vehicle_types", list(VEHICLE_TYPES),
                           "types to publish a fence for, each on <topic>/<type>").value
        if not path:
            raise ValueError(f"{self.name}: parameter 'file' names no geofence file")
        unknown = [t for t in types if t not in VEHICLE_TYPES]
        if unknown:
            raise ValueError(f"{self.name}: unknown vehicle_types {unknown} "
                             f"(known: {', '.join(VEHICLE_TYPES)})")
        fences = {topic: None, **{f"{topic}/{t}": t for t in types}}
        self.publishers = {}
        for name, vehicle_type in fences.items():
            try:
                fence = load_geojson(path, origin, vehicle_type)
            except GeofenceError as exc:  # unreadable files too
                raise ValueError(f"{self.name}: geofence {path}: {exc}") from None
            msg = fence_to_msg(fence)
            msg.header = Header(stamp_ns=self.now_ns(), frame_id="map")
            publisher = self.publisher(name, GeofenceMsg, latched=True)
            publisher.publish(msg)
            self.publishers[name] = publisher
            self.log.info("%s: %s with %d zones from %s", self.name, name, len(fence.zones),
                          path)
