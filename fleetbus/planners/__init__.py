"""Geofences, shortest paths inside them, smoothing and corridors (shapely). Pure library:
the planner and geofence-guard nodes put it on the bus."""

from fleetbus.planners.geofence import Geofence
from fleetbus.planners.geojson import dump_geojson, load_geojson, to_geojson
from fleetbus.planners.qgc import load_qgc_plan
from fleetbus.planners.visibility import PlanResult, VisibilityPlanner
from fleetbus.planners.zones import GeofenceError, Zone

__all__ = ["Geofence", "GeofenceError", "PlanResult", "VisibilityPlanner", "Zone",
           "dump_geojson", "load_geojson", "load_qgc_plan", "to_geojson"]
