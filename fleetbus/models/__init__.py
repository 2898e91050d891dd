"""Vehicle dynamics written once, evaluated with numpy (simulation) or CasADi symbols
(model-predictive control): quadrotor, surface vessel (Fossen 3-DOF), kinematic bicycle.

Pure library: no bus imports."""

from fleetbus.models.bicycle import Bicycle
from fleetbus.models.integrate import rk4
from fleetbus.models.quadrotor import Quadrotor
from fleetbus.models.rotor_quadrotor import RotorQuadrotor
from fleetbus.models.vessel import Vessel

__all__ = ["Bicycle", "Quadrotor", "RotorQuadrotor", "Vessel", "rk4"]
