"""Modbus driver, TCP and RTU (RS-485): DeviceConfig for a [devices.NAME] table, and Driver."""

from cimedge.drivers.modbus.config import DeviceConfig, PointConfig
from cimedge.drivers.modbus.driver import Driver

__all__ = ["DeviceConfig", "Driver", "PointConfig"]
