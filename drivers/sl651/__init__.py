"""SL 651-2014 hydrological telemetry stations (HEX/BCD): DeviceConfig and Driver, centre end."""

from cimedge.drivers.sl651.config import DeviceConfig, PointConfig
from cimedge.drivers.sl651.driver import Driver

__all__ = ["DeviceConfig", "Driver", "PointConfig"]
