"""BLE sensors (bleak): BTHome v2 advertisements and GATT characteristics; DeviceConfig, Driver."""

from drivers.ble.config import DeviceConfig, PointConfig
from drivers.ble.driver import Driver

__all__ = ["DeviceConfig", "Driver", "PointConfig"]
