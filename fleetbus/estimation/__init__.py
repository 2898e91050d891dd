"""Sensor fusion on filterpy: one estimator per vehicle type, and the engine that applies
measurements at their own stamps, gates them and reports consistency. Pure library: the
fusion node puts it on the bus."""

from fleetbus.estimation.car import CarFilter
from fleetbus.estimation.drone import DroneFilter
from fleetbus.estimation.engine import (
    Fusion,
    Measurement,
    MeasurementError,
    SensorConfig,
    SensorStats,
)
from fleetbus.estimation.estimate import Estimate
from fleetbus.estimation.ship import ShipFilter

FILTERS = {"quadrotor": DroneFilter, "car": CarFilter, "vessel": ShipFilter}

__all__ = ["FILTERS", "CarFilter", "DroneFilter", "Estimate", "Fusion", "Measurement",
           "MeasurementError", "SensorConfig", "SensorStats", "ShipFilter"]
