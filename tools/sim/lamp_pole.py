"""A smart lamp pole as a Modbus TCP slave: the lamp's current and power follow its switch and dim.

Register map (unit 1): input float32 at 0.. (two registers each, high word first):
lamp_current A, lamp_power W, voltage V, energy kWh, tilt deg, pm25 ug/m3, noise dBA,
temperature C, humidity %; then one input register of status bits (0 door_open);
coil 0 lamp_on; holding 0 dim_level (0-100 %).

The lamp draws about 0.1 A of driver standby plus 0.9 A at full light, in proportion to
the dim level, while switched on; nothing while off. ``broken = True`` makes a lit lamp
draw only the standby current (the lamp fault the pole's rule watches for), ``door``
opens the cabinet door and ``tilt`` leans the pole. The meter is a Modbus point here
until the DL/T 645 driver lands.
"""

from __future__ import annotations

from typing import ClassVar

from cimedge.tools.sim import plant
from cimedge.tools.sim.plant import Plant

STANDBY_A, FULL_A, VOLTS, PF = 0.1, 0.9, 230.0, 0.95


class LampPole(Plant):
    """The pole; set ``broken``, ``door`` or ``tilt`` to make trouble."""

    INPUTS: ClassVar[dict[str, str]] = {
        "lamp_current": "A", "lamp_power": "W", "voltage": "V", "energy": "kWh", "tilt": "deg",
        "pm25": "ug/m3", "noise": "dBA", "temperature": "Cel", "humidity": "%RH"}
    BITS = ("door_open",)
    COILS = ("lamp_on",)
    HOLDING: ClassVar[dict[str, int]] = {"dim_level": 100}

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.broken = False
        self.door = False
        self.tilt = 0.4
        self.energy = 0.0
        self.step(0.0)

    def step(self, dt: float) -> None:
        super().step(dt)
        v, rng = self.value, self.rng
        dim = max(0, min(100, self.reg["dim_level"])) / 100
        amps = 0.0
        if self.coil["lamp_on"]:
            amps = STANDBY_A + (0 if self.broken else FULL_A * dim)
            amps *= 1 + rng.gauss(0, 0.01)
        v["lamp_current"] = amps
        v["voltage"] = VOLTS + rng.gauss(0, 0.5)
        v["lamp_power"] = amps * v["voltage"] * PF
        self.energy += v["lamp_power"] * dt / 3.6e6
        v["energy"] = self.energy
        v["tilt"] = self.tilt + rng.gauss(0, 0.02)
        v["pm25"] = max(0.0, 35 + rng.gauss(0, 3))
        v["noise"] = 55 + rng.gauss(0, 2)
        v["temperature"] = 22 + rng.gauss(0, 0.1)
        v["humidity"] = 60 + rng.gauss(0, 0.5)
        self.bit["door_open"] = self.door


async def serve(port: int = 0, speed: float = 1.0, *, seed: int | None = None) -> LampPole:
    """A running pole on 127.0.0.1:port (0: a free one, see ``.port``)."""
    return await LampPole(speed=speed, seed=seed).start(port)


def main(argv: list[str] | None = None) -> None:
    plant.main(LampPole, "cimedge.tools.sim.lamp_pole", __doc__, argv)


if __name__ == "__main__":
    main()
