"""Field-protocol drivers, one sub-package each, imported only when a site uses them.

A driver package exports two names:

- ``DeviceConfig``: a ``msgspec.Struct`` (``forbid_unknown_fields=True``) for one
  ``[devices.NAME]`` table of the site TOML. It has ``driver: str``,
  ``poll_interval_s: float`` and ``points: dict[str, <point struct>]``, each point struct
  having ``unit: str``. An optional ``check(self) -> None`` method raises
  ``edge.errors.ConfigError("", "points.level.register", reason)`` for cross-field rules;
  the loader fills in the file, the full key path and the line.
- ``Driver``: ``Driver(device: str, config: DeviceConfig)``, an object following
  ``drivers.base.Driver``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

DRIVERS: dict[str, str] = {
    "modbus": "cimedge.drivers.modbus",
    "dlt645": "cimedge.drivers.dlt645",
    "ble": "cimedge.drivers.ble",
    "hj212": "cimedge.drivers.hj212",
    "sl651": "cimedge.drivers.sl651",
    "cjt188": "cimedge.drivers.cjt188",
    "iec104": "cimedge.drivers.iec104",
}

# Uplinks that speak a field protocol northwards ([north.NAME] tables): each module exports
# NorthConfig (with problem(units)) and Reporter(name, config, store, last).
NORTH: dict[str, str] = {"hj212": "cimedge.drivers.hj212.north"}


def load(kind: str) -> ModuleType:
    """Import the driver package for ``kind`` (KeyError when there is none)."""
    return importlib.import_module(DRIVERS[kind])


def load_north(protocol: str) -> ModuleType:
    """Import the north (uplink) module for ``protocol`` (KeyError when there is none)."""
    return importlib.import_module(NORTH[protocol])
