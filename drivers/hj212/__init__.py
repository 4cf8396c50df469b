"""HJ 212-2017 environmental monitoring stations: DeviceConfig for a [devices.NAME] table, and Driver."""

from cimedge.drivers.hj212.config import DeviceConfig, PointConfig
from cimedge.drivers.hj212.driver import Driver

__all__ = ["DeviceConfig", "Driver", "PointConfig"]
