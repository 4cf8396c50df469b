"""DL/T 645-2007 energy meters on RS-485: DeviceConfig for a [devices.NAME] table, and Driver."""

from cimedge.drivers.dlt645.config import DeviceConfig, PointConfig
from cimedge.drivers.dlt645.driver import Driver, discover

__all__ = ["DeviceConfig", "Driver", "PointConfig", "discover"]
