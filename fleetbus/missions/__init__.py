"""Missions: read from GeoJSON or given inline, and followed waypoint by waypoint. Pure
library: the mission manager node puts it on the bus."""

from fleetbus.missions.plan import GeoMission, MissionError, enu_mission, load_mission, read_mission
from fleetbus.missions.tracker import STOP_SPEED_MPS, MissionTracker, Step

__all__ = ["STOP_SPEED_MPS", "GeoMission", "MissionError", "MissionTracker", "Step",
           "enu_mission", "load_mission", "read_mission"]
