"""A utility-tunnel section as a Modbus TCP slave: gas the fan clears, water the sump pump lifts.

Register map (unit 1): input float32 at 0..: ch4 %LEL, o2 %vol, h2s ppm, temperature C,
humidity %, settlement mm, sump_level m; then one input register of status bits
(0 fan_running, 1 sump_pump_running); coils 0 fan_on, 1 sump_pump_on.

Methane leaks in at ``leak`` %LEL per second and is carried off in proportion to its
level, slowly by natural draught and 25 times faster with the fan: with the default leak
it settles near 30 %LEL with the fan off and about 1.2 %LEL with it on. Oxygen dips a
little as gas rises. Water seeps in at ``ingress`` m/s and the sump pump lifts 0.01 m/s.
"""

from __future__ import annotations

from typing import ClassVar

from cimedge.tools.sim import plant
from cimedge.tools.sim.plant import Plant

DRAUGHT, FAN = 0.002, 0.05  # share of the gas carried off per second
PUMP_RATE = 0.01  # m/s


class Tunnel(Plant):
    """The section; set ``leak`` (%LEL/s) or ``ingress`` (m/s)."""

    INPUTS: ClassVar[dict[str, str]] = {
        "ch4": "%LEL", "o2": "%vol", "h2s": "ppm", "temperature": "Cel", "humidity": "%RH",
        "settlement": "mm", "sump_level": "m"}
    BITS = ("fan_running", "sump_pump_running")
    COILS = ("fan_on", "sump_pump_on")

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.leak = 0.06
        self.ingress = 0.002
        self.ch4 = 5.0
        self.sump = 0.3
        self.step(0.0)

    def step(self, dt: float) -> None:
        super().step(dt)
        v, rng, c = self.value, self.rng, self.coil
        out = FAN if c["fan_on"] else DRAUGHT
        self.ch4 = max(0.0, self.ch4 + (self.leak - out * self.ch4) * dt)
        self.sump = max(0.0, self.sump + (self.ingress - (PUMP_RATE if c["sump_pump_on"]
                                                           else 0.0)) * dt)
        v["ch4"] = max(0.0, self.ch4 + rng.gauss(0, 0.1))
        v["o2"] = 20.9 - 0.02 * self.ch4 + rng.gauss(0, 0.02)
        v["h2s"] = max(0.0, 0.05 * self.ch4 + rng.gauss(0, 0.05))
        v["temperature"] = 18 + rng.gauss(0, 0.1)
        v["humidity"] = 85 + rng.gauss(0, 0.5)
        v["settlement"] = 1.2 + rng.gauss(0, 0.01)
        v["sump_level"] = self.sump
        self.bit["fan_running"], self.bit["sump_pump_running"] = c["fan_on"], c["sump_pump_on"]


async def serve(port: int = 0, speed: float = 1.0, *, seed: int | None = None) -> Tunnel:
    return await Tunnel(speed=speed, seed=seed).start(port)


def main(argv: list[str] | None = None) -> None:
    plant.main(Tunnel, "cimedge.tools.sim.tunnel", __doc__, argv)


if __name__ == "__main__":
    main()
