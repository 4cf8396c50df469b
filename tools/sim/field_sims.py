"""The HJ 212, SL 651, IEC 104 and CJ/T 188 devices of the site templates, on their simulators.

``cimedge demo --site`` (``tools.sim.site_sims``) starts these beside each site's Modbus
plant: ``lamp_pole_extras()`` the air-quality station uploading to the gateway,
``pump_station_extras()`` the level and rain station, the station PLC (the asyncio
``LiteRtu``: the demo does not need c104) and a water meter on a PTY. Each returns the
template values that point at them and a close function. Stations that connect to the
gateway keep retrying until it listens, as real ones do.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

Close = Callable[[], Awaitable[None]]
HOST = "127.0.0.1"


def free_port() -> int:
    """A loopback port free now, for a gateway listener a simulated station will dial."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _secret(folder: Path, name: str, text: str) -> str:
    path = folder / name
    path.write_text(text + "\n")
    path.chmod(0o600)
    return str(path)


async def lamp_pole_extras(speed: float = 1.0) -> tuple[dict[str, Any], Close]:
    """The pole's HJ 212 air-quality station (aq1), uploading every second."""
    from cimedge.tools.sim.hj212_station import Station  # noqa: PLC0415

    folder = Path(tempfile.mkdtemp(prefix="cimedge-aq1-"))
    port = free_port()
    del speed  # the station's rate is its own, not the plant's time factor
    station = Station("LP0001AQ01", "aq1demo", interval_s=1.0)
    station.connect(HOST, port)
    values = {"aq1_mn": station.mn, "aq1_listen_host": HOST, "aq1_listen_port": port,
              "aq1_password_file": _secret(folder, "aq1.pw", station.password)}

    async def close() -> None:
        await station.close()
        shutil.rmtree(folder, ignore_errors=True)

    return values, close


async def pump_station_extras(speed: float = 1.0) -> tuple[dict[str, Any], Close]:
    """The level and rain station (hs1), the station PLC (plc1) and the water meter (wm1)."""
    from cimedge.tools.sim.cjt188_meter import Meter, MeterLine  # noqa: PLC0415
    from cimedge.tools.sim.iec104_rtu import LiteRtu  # noqa: PLC0415
    from cimedge.tools.sim.sl651_station import Station  # noqa: PLC0415

    folder = Path(tempfile.mkdtemp(prefix="cimedge-hs1-"))
    port = free_port()
    del speed  # these devices report at their own rates (modest: the HIL rig's serial lines
    # share this event loop)
    hydro = Station("0012345678", "5A17", interval_s=2.0)
    hydro.connect(HOST, port)
    rtu = LiteRtu(cyclic_s=1.0)
    await rtu.start(HOST)
    meter = Meter("00201510270588")
    # a Linux PTY takes 8E1 once but refuses it on the next open (EINVAL): the simulated line
    # runs 8N1, which a PTY carries the same way (it has no parity bits to check)
    line = await MeterLine([meter], baudrate=2400, parity="N").start()
    values = {"hs1_station": hydro.address, "hs1_listen_host": HOST, "hs1_listen_port": port,
              "hs1_password_file": _secret(folder, "hs1.pw", hydro.password),
              "plc1_host": HOST, "plc1_port": rtu.port, "wm1_port": line.path,
              "wm1_address": meter.address, "wm1_parity": "N"}

    async def close() -> None:
        await hydro.close()
        await rtu.close()
        with contextlib.suppress(Exception):
            await line.close()
        shutil.rmtree(folder, ignore_errors=True)

    return values, close
