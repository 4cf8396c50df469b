"""The common DL/T 645-2007 data identifiers, by name, with their BCD format and unit; pure.

Formats are those of the standard's appendix A (data identifier tables): "XXXXXX.XX" is four
BCD bytes with two decimals. Quantities that can be negative (combined energy, current,
power, power factor, temperature) carry a sign in the top bit.
"""

from __future__ import annotations

import msgspec

from cimedge.drivers.dlt645.frame import Format


class Quantity(msgspec.Struct, frozen=True):
    """One data identifier: DI3 DI2 DI1 DI0 as the standard writes it, format and unit."""

    di: int
    format: Format
    unit: str
    meaning: str


def _q(di: int, length: int, decimals: int, signed: bool, unit: str, meaning: str) -> Quantity:  # noqa: FBT001, PLR0913
    return Quantity(di, Format(length, decimals, signed), unit, meaning)


CATALOGUE: dict[str, Quantity] = {
    "energy_total": _q(0x00000000, 4, 2, True, "kWh", "combined active energy, total"),
    "energy_import": _q(0x00010000, 4, 2, False, "kWh", "forward (import) active energy, total"),
    "energy_export": _q(0x00020000, 4, 2, False, "kWh", "reverse (export) active energy, total"),
    "voltage_a": _q(0x02010100, 2, 1, False, "V", "phase A voltage"),
    "voltage_b": _q(0x02010200, 2, 1, False, "V", "phase B voltage"),
    "voltage_c": _q(0x02010300, 2, 1, False, "V", "phase C voltage"),
    "current_a": _q(0x02020100, 3, 3, True, "A", "phase A current"),
    "current_b": _q(0x02020200, 3, 3, True, "A", "phase B current"),
    "current_c": _q(0x02020300, 3, 3, True, "A", "phase C current"),
    "power": _q(0x02030000, 3, 4, True, "kW", "active power, total"),
    "power_a": _q(0x02030100, 3, 4, True, "kW", "phase A active power"),
    "power_b": _q(0x02030200, 3, 4, True, "kW", "phase B active power"),
    "power_c": _q(0x02030300, 3, 4, True, "kW", "phase C active power"),
    "reactive_power": _q(0x02040000, 3, 4, True, "kvar", "reactive power, total"),
    "apparent_power": _q(0x02050000, 3, 4, True, "kVA", "apparent power, total"),
    "power_factor": _q(0x02060000, 2, 3, True, "", "power factor, total"),
    "power_factor_a": _q(0x02060100, 2, 3, True, "", "phase A power factor"),
    "power_factor_b": _q(0x02060200, 2, 3, True, "", "phase B power factor"),
    "power_factor_c": _q(0x02060300, 2, 3, True, "", "phase C power factor"),
    "neutral_current": _q(0x02800001, 3, 3, True, "A", "neutral (zero line) current"),
    "frequency": _q(0x02800002, 2, 2, False, "Hz", "grid frequency"),
    "meter_temperature": _q(0x02800007, 2, 1, True, "Cel", "temperature inside the meter"),
}
