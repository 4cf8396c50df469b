"""The simulated rig: the same description as a bench rig, built on this machine.

- each bus is a ``rs485.Line`` (a pseudo-terminal the gateway opens as its serial port);
- each meter is a Modbus RTU slave (``tools/sim/rtu_bus.py``) on its own drop of that line;
- each node is the real MicroPython firmware (``tools/sim/node.py``, WebAssembly port) on its
  own drop, flashed with a firmware key this rig makes, powered by a simulated relay;
- the site's field equipment is the site type's simulator (``tools/sim/site_sims.py``);
- the broker is a private Mosquitto with mutual TLS and per-device ACLs (``cimedge ca``),
  plus a plain loopback listener for the test's receiver.

The asyncio simulators run on one event loop in a background thread; the scenarios call in.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from hil_tests.rig import Rig, RigSpec
from hil_tests.rs485 import Line
from cimedge.provisioning import ca
from cimedge.tools.broker import Mosquitto, free_port

T = TypeVar("T")


class SimRig(Rig):
    def __init__(self, spec: RigSpec, work: Path) -> None:
        self.spec, self.work = spec, work
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="sim-rig",
                                        daemon=True)
        self._thread.start()
        self.lines: dict[str, Line] = {}
        self.meters: dict[str, Any] = {}
        self.nodes: dict[str, Any] = {}
        self.site_sim: Any = None
        self.broker: Mosquitto | None = None
        self._fw_key: Any = None
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def _start(self) -> None:
        from cimedge.tools.sim import site_sims
        from cimedge.tools.sim.node import SimNode, fwimage, sim_board

        self.ca_dir = self.work / "ca"
        ca.init(self.ca_dir)
        tls_port = free_port()
        conf = ca.mosquitto_conf(self.ca_dir, self.work / "broker-tls", port=tls_port,
                                 anonymous_backend=True)
        (self.work / "mosquitto").mkdir()
        self.broker = Mosquitto(workdir=self.work / "mosquitto", extra_conf=conf)
        self.broker.start()
        self.broker_url = f"mqtts://127.0.0.1:{tls_port}"
        self.backend_url = self.broker.url
        self.site_sim = self.call(site_sims.start(self.spec.site.type, self.spec.site.speed))
        for name, bus in self.spec.buses.items():
            self.lines[name] = self.call(Line(name, bus.baudrate, bus.parity).start())
        for name, m in self.spec.meters.items():
            self.meters[name] = self.call(self._meter(name, m.unit))
        self._fw_key = fwimage().LmsKey.generate(self.work / "fw.key", height=5, w=4)
        for name, n in self.spec.nodes.items():
            node = SimNode(self.work / f"{name}-flash", board=sim_board(n.channels, unit=n.unit),
                           pub=self._fw_key.public(), log=self.work / f"{name}.log")
            self.nodes[name] = node
            node.start()
            self.call(self._attach(n.bus, name, node.port))

    async def _meter(self, name: str, unit: int) -> Any:  # noqa: ANN401
        from cimedge.tools.sim.rtu_bus import RtuBus, demo_unit

        bus = await RtuBus({unit: demo_unit(unit)}).start()
        self.lines[self.spec.meters[name].bus].attach(name, bus.path)
        return bus

    async def _attach(self, bus: str, name: str, path: str) -> None:
        self.lines[bus].attach(name, path)

    # -- the description, realised ----------------------------------------------------------
    def bus_path(self, bus: str) -> str:
        return self.lines[bus].path

    def template_values(self) -> dict[str, Any]:
        return {**self.site_sim.values, **self.spec.site.values}

    # -- faults -----------------------------------------------------------------------------
    def switch(self, node: str, connected: bool) -> None:  # noqa: FBT001
        line = self.lines[self.spec.nodes[node].bus]
        self.loop.call_soon_threadsafe(line.connect, node, connected)

    def power(self, node: str, on: bool) -> None:  # noqa: FBT001
        if on:
            self.nodes[node].power_on()
        else:
            self.nodes[node].power_off()

    def uplink(self, up: bool) -> None:  # noqa: FBT001
        assert self.broker is not None
        if up:
            self.broker.start()
        else:
            self.broker.stop()

    def firmware_key(self) -> Any:  # noqa: ANN401
        return self._fw_key

    def stage_firmware(self, node: str, image: bytes) -> None:
        """As `cimedge node flash --image` does over USB: update.bin on the node's flash."""
        (self.nodes[node].flash / "update.bin").write_bytes(image)

    def close(self) -> None:
        for node in self.nodes.values():
            node.close()

        async def stop() -> None:
            for bus in self.meters.values():
                await bus.close()
            for line in self.lines.values():
                await line.close()
            if self.site_sim is not None:
                await self.site_sim.close()
        if self.loop.is_running():
            try:
                self.call(stop(), timeout=10)
            finally:
                self.loop.call_soon_threadsafe(self.loop.stop)
                self._thread.join(5)
        if self.broker is not None:
            self.broker.close()
