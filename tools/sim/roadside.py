"""A roadside unit's cabinet as a Modbus TCP slave: its temperature falls when the fan runs.

Register map (unit 1): input float32 at 0..: cabinet_temp C, humidity %, supply_voltage V,
unit_temp C, link_rssi dBm; then one input register of status bits (0 link_up, 1 unit_ok);
coil 0 fan_on.

The cabinet heats toward ambient + 18 C with the fan off and cools toward ambient + 3 C
with it on (first-order, time constant 120 s); ``ambient`` sets the weather and
``link_up`` the radio link.
"""

from __future__ import annotations

from typing import ClassVar

from cimedge.tools.sim import plant
from cimedge.tools.sim.plant import Plant, approach

HEAT_RISE, FAN_RISE, TAU_S = 18.0, 3.0, 120.0


class Roadside(Plant):
    """The cabinet; set ``ambient`` (C) or ``link_up``."""

    INPUTS: ClassVar[dict[str, str]] = {
        "cabinet_temp": "Cel", "humidity": "%RH", "supply_voltage": "V", "unit_temp": "Cel",
        "link_rssi": "dBm"}
    BITS = ("link_up", "unit_ok")
    COILS = ("fan_on",)

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.ambient = 30.0
        self.link_up = True
        self.temp = self.ambient + 10
        self.step(0.0)

    def step(self, dt: float) -> None:
        super().step(dt)
        v, rng = self.value, self.rng
        target = self.ambient + (FAN_RISE if self.coil["fan_on"] else HEAT_RISE)
        self.temp = approach(self.temp, target, dt, TAU_S)
        v["cabinet_temp"] = self.temp + rng.gauss(0, 0.05)
        v["humidity"] = 45 + rng.gauss(0, 0.3)
        v["supply_voltage"] = 24 + rng.gauss(0, 0.05)
        v["unit_temp"] = self.temp + 8
        v["link_rssi"] = -67 + rng.gauss(0, 1) if self.link_up else -120.0
        self.bit["link_up"] = self.link_up
        self.bit["unit_ok"] = self.temp < 70


async def serve(port: int = 0, speed: float = 1.0, *, seed: int | None = None) -> Roadside:
    return await Roadside(speed=speed, seed=seed).start(port)


def main(argv: list[str] | None = None) -> None:
    plant.main(Roadside, "cimedge.tools.sim.roadside", __doc__, argv)


if __name__ == "__main__":
    main()
