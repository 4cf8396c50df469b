"""BLE sensors (bleak): BTHome v2 advertisements and GATT characteristics; DeviceConfig, Driver."""

from cimedge.drivers.ble.config import DeviceConfig, PointConfig
from cimedge.drivers.ble.driver import Driver

__all__ = ["DeviceConfig", "Driver", "PointConfig"]
