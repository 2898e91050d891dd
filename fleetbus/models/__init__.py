"""Vehicle dynamics written once, evaluated with numpy (simulation) or CasADi symbols
(model-predictive control): quadrotor, surface vessels (Fossen 3-DOF: CyberShip II and the
Otter USV), kinematic bicycle.

Pure library: no bus imports."""

from fleetbus.models.bicycle import Bicycle
from fleetbus.models.integrate import rk4
from fleetbus.models.otter import Otter
from fleetbus.models.quadrotor import Quadrotor
from fleetbus.models.rotor_quadrotor import RotorQuadrotor
from fleetbus.models.vessel import Vessel

__all__ = ["Bicycle", "Otter", "Quadrotor", "RotorQuadrotor", "Vessel", "rk4"]
