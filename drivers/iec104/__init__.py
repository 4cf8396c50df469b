"""IEC 60870-5-104 RTUs and PLCs (client, own APCI code): DeviceConfig for a [devices.NAME] table, and Driver."""

from cimedge.drivers.iec104.config import DeviceConfig, PointConfig
from cimedge.drivers.iec104.driver import Driver

__all__ = ["DeviceConfig", "Driver", "PointConfig"]
