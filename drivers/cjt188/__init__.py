"""CJ/T 188-2004 water, heat and gas meters on RS-485/M-Bus: DeviceConfig and Driver."""

from cimedge.drivers.cjt188.config import DeviceConfig, PointConfig
from cimedge.drivers.cjt188.driver import Driver

__all__ = ["DeviceConfig", "Driver", "PointConfig"]
