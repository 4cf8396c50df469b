"""The one site both gateways poll: N devices of M uint32 counting points, one poll period."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Site:
    """What both configs are generated from, so they cannot drift apart."""

    devices: int = 10
    points: int = 20
    poll_s: float = 1.0

    def device(self, d: int) -> str:
        """Device name, the same in both gateways: d00, d01, ..."""
        return f"d{d:02d}"

    def point(self, i: int) -> str:
        """Point name, the same in both gateways: r<register address> (the peer derives it)."""
        return f"r{2 * i}"

    def keys(self) -> list[str]:
        """Every "device.point" key, in simulator order (device-major)."""
        return [f"{self.device(d)}.{self.point(i)}"
                for d in range(self.devices) for i in range(self.points)]

    def polling(self, poll_s: float) -> Site:
        return replace(self, poll_s=poll_s)
