"""The simulator behind each site template, started and described for ``cimedge demo --site``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from cimedge.tools.sim import field_sims

DEVICE_IDS = {"pump_station": "ps-demo-02", "lamp_pole": "lp-demo-01",
              "roadside_unit": "rsu-demo-01", "utility_tunnel": "ut-demo-01"}


@dataclass
class SiteSim:
    """A running simulator: the template values that point at it, and what the demo shows."""

    site_type: str
    sim: Any
    values: dict[str, Any]
    headline: list[str]  # points the one-line view shows
    close: Callable[[], Awaitable[None]]
    notes: list[str] = field(default_factory=list)


async def start(site_type: str, speed: float = 1.0) -> SiteSim:
    """Start the simulator for ``site_type``; demo tuning makes a compressed site cycle visibly."""
    host = "127.0.0.1"
    if site_type == "pump_station":
        from cimedge.tools.sim import pump_pair

        pp = await pump_pair.serve(speed=speed)
        assert pp.station is not None
        extras, close_extras = await field_sims.pump_station_extras(speed)
        # the well cycles in ~40 s at speed 1 (time compressed ~70x): interlocks scaled to match
        values = {"ps1_host": host, "ps1_port": pp.station.port, "ps2_host": host,
                  "ps2_port": pp.standby.port, "pump_min_run_s": 3, "pump_min_rest_s": 5,
                  "pump_max_starts": 360, **extras}
        return SiteSim(site_type, pp, values, ["ps1.level", "ps1.pump_cmd", "ps2.pump_cmd"],
                       _both(pp.close, close_extras),
                       ["two pumps, duty and standby, alternate over one wet well",
                        "SL 651 level/rain station, IEC 104 PLC and CJ/T 188 water meter"])
    if site_type == "lamp_pole":
        from cimedge.tools.sim import lamp_pole

        pole = await lamp_pole.serve(speed=speed)
        extras, close_extras = await field_sims.lamp_pole_extras(speed)
        return SiteSim(site_type, pole, {"lp1_host": host, "lp1_port": pole.port, **extras},
                       ["lp1.lamp_on", "lp1.dim_level", "lp1.lamp_current"],
                       _both(pole.close, close_extras),
                       ["the lamp follows the real sunset and sunrise of Shanghai",
                        "an HJ 212 air-quality station uploads to the gateway"])
    if site_type == "roadside_unit":
        from cimedge.tools.sim import roadside

        rsu = await roadside.serve(speed=speed)
        return SiteSim(site_type, rsu, {"rsu1_host": host, "rsu1_port": rsu.port},
                       ["rsu1.cabinet_temp", "rsu1.fan_on"], rsu.close)
    if site_type == "utility_tunnel":
        from cimedge.tools.sim import tunnel

        tun = await tunnel.serve(speed=speed)
        tun.leak = 0.25  # a leak the fan can hold below 10 %LEL, that reaches 20 in a minute
        return SiteSim(site_type, tun, {"ut1_host": host, "ut1_port": tun.port,
                                        "fan_min_run_s": 20},
                       ["ut1.ch4", "ut1.fan_on", "ut1.sump_level"], tun.close)
    raise KeyError(site_type)


def _both(*closers: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    async def close() -> None:
        for c in closers:
            await c()
    return close
