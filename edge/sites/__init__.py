"""Site templates (DESIGN.md section 7): one TOML per site type, filled in with string.Template.

``render(site_type, values)`` substitutes ``$name`` placeholders: the gateway's
``device_id`` and ``broker``, each device's ``<dev>_host`` and ``<dev>_port``, and the
tuning values a template lists in its header (its defaults are in ``DEFAULTS``). A
placeholder left without a value is an error, so a rendered file never holds a ``$``.
"""

from __future__ import annotations

import string
from importlib import resources
from typing import Any

TYPES = ("pump_station", "lamp_pole", "roadside_unit", "utility_tunnel")

COMMON: dict[str, Any] = {"broker": "mqtts://broker.example:8883", "timezone": "Asia/Shanghai",
                          "poll_s": 1.0, "store_path": "buffer.sqlite"}
DEFAULTS: dict[str, dict[str, Any]] = {
    "pump_station": {"device_id": "ps-0001", "ps1_host": "192.0.2.10", "ps1_port": 502,
                     "ps2_host": "192.0.2.11", "ps2_port": 502, "pump_min_run_s": 120,
                     "pump_min_rest_s": 300, "pump_max_starts": 6,
                     "hs1_station": "0012345678", "hs1_password_file": "/etc/cimedge/hs1.pw",
                     "hs1_listen_host": "127.0.0.1", "hs1_listen_port": 5651,
                     "plc1_host": "plc1.pump-station.invalid", "plc1_port": 2404,
                     "wm1_port": "/dev/ttyUSB2", "wm1_address": "00201510270588", "wm1_parity": "E"},
    "lamp_pole": {"device_id": "lp-0001", "lp1_host": "192.0.2.20", "lp1_port": 502,
                  "lat": 31.2304, "lon": 121.4737, "aq1_mn": "LP0001AQ01",
                  "aq1_password_file": "/etc/cimedge/aq1.pw", "aq1_listen_host": "127.0.0.1",
                  "aq1_listen_port": 6212},
    "roadside_unit": {"device_id": "rsu-0001", "rsu1_host": "192.0.2.30", "rsu1_port": 502},
    "utility_tunnel": {"device_id": "ut-0001", "ut1_host": "192.0.2.40", "ut1_port": 502,
                       "fan_min_run_s": 300},
}


def text(site_type: str) -> str:
    """The raw template."""
    if site_type not in TYPES:
        raise KeyError(f"no site template {site_type!r} (one of {', '.join(TYPES)})")
    return resources.files(__package__).joinpath(f"{site_type}.toml").read_text("utf-8")


def render(site_type: str, values: dict[str, Any] | None = None) -> str:
    """The template with every placeholder filled (``values`` over the defaults)."""
    merged = {**COMMON, **DEFAULTS[site_type], **(values or {})}
    return string.Template(text(site_type)).substitute(merged)
