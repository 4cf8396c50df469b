"""A rig description (TOML) and what every rig offers the scenarios, simulated or on the bench.

A rig file names the site type the gateway is provisioned for, the broker, the serial buses,
the Modbus meters and the sensor nodes on them, and the faults the rig can inject: a bus
switch per node, a power relay per node, an uplink cut. A fault is ``"sim"`` on the
simulated rig, a pair of shell commands on a bench (``{ off = "...", on = "..." }``, e.g. a
USB relay board's tool), or absent; a scenario that needs an absent fault is skipped, with
the reason. ``rigs/sim.toml`` and ``rigs/bench-01.toml`` show every key.
"""

from __future__ import annotations

import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from cimedge.edge.errors import ConfigError

Unit = Annotated[int, msgspec.Meta(ge=1, le=247)]
NODE_POINTS = (  # DESIGN.md section 6: what the gateway polls on every node
    ("fw_major", 0, "uint16", ""), ("fw_minor_patch", 1, "uint16", ""),
    ("uptime", 2, "uint32", "s"), ("status", 4, "uint16", ""), ("channels", 5, "uint16", ""))


class Command(msgspec.Struct, forbid_unknown_fields=True):
    """A bench fault: the commands that switch it off (fault on) and back on."""

    off: str
    on: str


Control = Literal["sim"] | Command


class SiteSpec(msgspec.Struct, forbid_unknown_fields=True):
    type: str = "pump_station"
    speed: float = 8.0  # sim: the site simulator's time factor
    values: dict[str, Any] = {}  # template placeholders (bench: the real hosts and ports)


class BrokerSpec(msgspec.Struct, forbid_unknown_fields=True):
    url: str = ""  # the gateway's mqtts:// URL ("" on sim: a private Mosquitto)
    backend_url: str = ""  # where the test's receiver connects
    ca_dir: str = ""  # the CA that signs the gateway's CSR (cimedge ca init)


class BusSpec(msgspec.Struct, forbid_unknown_fields=True):
    port: str  # "sim" or the adapter's path (/dev/serial/by-id/...)
    baudrate: int = 9600
    parity: Literal["N", "E", "O"] = "N"


class MeterSpec(msgspec.Struct, forbid_unknown_fields=True):
    bus: str
    unit: Unit
    points: dict[str, dict[str, Any]]  # [devices.X.points] tables, as in a site config
    model: str = "demo"  # sim: tools/sim/rtu_bus.py's demo register map


class NodeSpec(msgspec.Struct, forbid_unknown_fields=True):
    bus: str
    unit: Unit
    channels: Annotated[int, msgspec.Meta(ge=0, le=8)] = 2
    switch: Control | None = None  # takes the node off the bus
    power: Control | None = None  # its power relay
    usb: str = ""  # bench: the board's USB port, for `cimedge node flash --image`
    board: str = ""  # bench: its board.json


class UplinkSpec(msgspec.Struct, forbid_unknown_fields=True):
    cut: Control | None = None


class FirmwareSpec(msgspec.Struct, forbid_unknown_fields=True):
    key: str = ""  # bench: the LMS signing key (firmware/host/fwimage.py keygen); sim makes one
    pub: str = ""


class RigSpec(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    kind: Literal["sim", "bench"]
    device_id: str
    site: SiteSpec = msgspec.field(default_factory=SiteSpec)
    broker: BrokerSpec = msgspec.field(default_factory=BrokerSpec)
    buses: dict[str, BusSpec] = {}
    meters: dict[str, MeterSpec] = {}
    nodes: dict[str, NodeSpec] = {}
    uplink: UplinkSpec = msgspec.field(default_factory=UplinkSpec)
    firmware: FirmwareSpec = msgspec.field(default_factory=FirmwareSpec)
    file: str = ""


def load(path: Path) -> RigSpec:
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(str(path), "", str(e)) from None
    raw = {**raw.pop("rig", {}), **raw, "file": str(path)}
    try:
        spec = msgspec.convert(raw, RigSpec)
    except msgspec.ValidationError as e:
        raise ConfigError(str(path), "", str(e)) from None
    devices: list[tuple[str, MeterSpec | NodeSpec]] = [*spec.meters.items(),
                                                       *spec.nodes.items()]
    for name, dev in devices:
        if dev.bus not in spec.buses:
            raise ConfigError(str(path), f"{name}.bus", f"no bus named {dev.bus!r}")
    return spec


class Rig:
    """What scenarios use; SimRig and BenchRig fill in the hardware side."""

    spec: RigSpec
    broker_url: str
    backend_url: str
    ca_dir: Path | None

    def bus_path(self, bus: str) -> str:
        return self.spec.buses[bus].port

    def template_values(self) -> dict[str, Any]:
        return dict(self.spec.site.values)

    def site_template(self) -> str:
        """The site type's template, plus this rig's serial devices on their buses."""
        from cimedge.edge import sites

        return sites.text(self.spec.site.type) + "\n" + self.bus_devices()

    def bus_devices(self) -> str:
        out = ["# -- the rig's serial devices (hil_tests/rig.py) --"]
        for name, m in self.spec.meters.items():
            out += self._device(name, m.bus, m.unit, 0.5)
            for point, table in m.points.items():
                out += [f"[devices.{name}.points.{point}]", *(f"{k} = {_lit(v)}"
                                                             for k, v in table.items()), ""]
        for name, n in self.spec.nodes.items():
            out += self._device(name, n.bus, n.unit, 0.5)
            for point, address, dtype, unit in NODE_POINTS:
                out += [f"[devices.{name}.points.{point}]", 'table = "input"',
                        f"address = {address}", f'dtype = "{dtype}"', f'unit = "{unit}"', ""]
            for ch in range(n.channels):
                out += [f"[devices.{name}.points.ch{ch}]", 'table = "input"',
                        f"address = {100 + 2 * ch}", 'dtype = "float32"', ""]
        return "\n".join(out)

    def _device(self, name: str, bus: str, unit: int, poll: float) -> list[str]:
        b = self.spec.buses[bus]
        # A short backoff: a device that comes back is polled again within seconds.
        return [f"[devices.{name}]", 'driver = "modbus"', 'transport = "rtu"',
                f'port = "{self.bus_path(bus)}"', f"unit = {unit}", f"baudrate = {b.baudrate}",
                f'parity = "{b.parity}"', f"poll_interval_s = {poll}", "timeout_s = 0.3",
                "probe_timeout_s = 0.2", "backoff_max_s = 2.0", ""]

    # -- faults: "why not" (a skip reason) or None when the rig can do it ------------------
    def cannot(self, fault: str, name: str = "") -> str | None:
        return cannot(self.spec, fault, name)

    def cannot_update_firmware(self, node: str) -> str | None:
        return cannot(self.spec, "firmware", node)

    def switch(self, node: str, connected: bool) -> None:  # noqa: FBT001
        self._bench(self.spec.nodes[node].switch, connected)

    def power(self, node: str, on: bool) -> None:  # noqa: FBT001
        self._bench(self.spec.nodes[node].power, on)

    def uplink(self, up: bool) -> None:  # noqa: FBT001
        self._bench(self.spec.uplink.cut, up)

    def _bench(self, control: Control | None, on: bool) -> None:  # noqa: FBT001
        assert isinstance(control, Command), control
        subprocess.run(shlex.split(control.on if on else control.off), check=True, timeout=30)

    def stage_firmware(self, node: str, image: bytes) -> None:
        raise NotImplementedError

    def firmware_key(self) -> Any:  # noqa: ANN401 - firmware/host/fwimage.py LmsKey
        raise NotImplementedError

    def close(self) -> None:
        """Stop what the rig started."""


class BenchRig(Rig):
    """Real hardware on this machine's serial ports; faults by the rig file's commands."""

    def __init__(self, spec: RigSpec) -> None:
        self.spec = spec
        self.broker_url = spec.broker.url
        self.backend_url = spec.broker.backend_url or spec.broker.url
        self.ca_dir = Path(spec.broker.ca_dir) if spec.broker.ca_dir else None

    def firmware_key(self) -> Any:  # noqa: ANN401
        from cimedge.tools.sim.node import fwimage

        return fwimage().LmsKey.load(Path(self.spec.firmware.key))

    def stage_firmware(self, node: str, image: bytes) -> None:
        import sys
        import tempfile

        n = self.spec.nodes[node]
        with tempfile.NamedTemporaryFile(suffix=".cimfw") as f:
            f.write(image)
            f.flush()
            subprocess.run([sys.executable, "-m", "cimedge.provisioning.cli", "node", "flash", "--port",
                            n.usb, "--board", n.board, "--key", self.spec.firmware.pub,
                            "--image", f.name], check=True, timeout=600)


def cannot(spec: RigSpec, need: str, name: str = "") -> str | None:
    """Why the rig cannot give a scenario ``need``, or None when it can.

    ``need``: switch, power or firmware (of node ``name``, default the first), uplink, ca
    (a CA to sign the gateway's CSR), or a site type.
    """
    if need in ("switch", "power", "firmware"):
        return _node_cannot(spec, need, name or next(iter(spec.nodes), ""))
    if need == "uplink":
        return None if spec.uplink.cut else \
            f"rig {spec.name} has no way to cut the uplink (add it to {spec.file})"
    if need == "ca":
        return f"rig {spec.name} names no CA ([broker] ca_dir) to sign the gateway's CSR" \
            if spec.kind == "bench" and not spec.broker.ca_dir else None
    return None if need == spec.site.type else \
        f"the rig's site is a {spec.site.type}, not a {need}"


def _node_cannot(spec: RigSpec, need: str, name: str) -> str | None:
    node = spec.nodes.get(name)
    if node is None:
        return f"rig {spec.name} has no node {name!r}"
    if need == "firmware":
        missing = [k for k, v in (("usb", node.usb), ("board", node.board),
                                  ("firmware.key", spec.firmware.key),
                                  ("firmware.pub", spec.firmware.pub)) if not v]
        if spec.kind == "bench" and missing:
            return f"rig {spec.name}: node {name} needs {', '.join(missing)} to be flashed"
        need = "power"  # a staged image installs at the next boot
    if (node.switch if need == "switch" else node.power) is None:
        what = "bus switch" if need == "switch" else "power relay"
        return f"rig {spec.name} has no {what} for node {name} (add it to {spec.file})"
    return None


def _lit(v: Any) -> str:  # noqa: ANN401
    import json

    return ("true" if v else "false") if isinstance(v, bool) else json.dumps(v)


def open_rig(spec: RigSpec, work: Path) -> Rig:
    if spec.kind == "bench":
        return BenchRig(spec)
    from hil_tests.simrig import SimRig

    return SimRig(spec, work)
