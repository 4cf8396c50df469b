"""The read plan: the fewest Modbus requests that cover a device's points; pure, built at load."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, Protocol

import msgspec

Table = Literal["holding", "input", "coil", "discrete"]
TABLES: tuple[Table, ...] = ("holding", "input", "coil", "discrete")
BIT_TABLES = frozenset({"coil", "discrete"})
MAX_BITS = 2000  # Modbus limit for one read of coils or discrete inputs


class Span(Protocol):
    """What the planner needs of a point: its table and the addresses it occupies."""

    @property
    def table(self) -> Table:
        """Function table the point lives in."""

    @property
    def address(self) -> int:
        """First address."""

    @property
    def width(self) -> int:
        """Addresses occupied: registers, or bits on coil and discrete tables."""


class Request(msgspec.Struct, frozen=True):
    """One read: ``count`` registers or bits of ``table`` from ``address``, feeding ``points``."""

    table: Table
    address: int
    count: int
    points: tuple[str, ...]


def coalesce(
    points: Mapping[str, Span], max_regs: int = 125, max_gap: int = 8, max_bits: int = MAX_BITS
) -> tuple[Request, ...]:
    """Group points into requests, table by table in ``TABLES`` order, lowest address first.

    A request reads through a run of unused addresses only if the run is at most
    ``max_gap`` registers (``16 * max_gap`` bits for coils and discrete inputs: the same
    bytes on the wire). Greedy in address order: no grouping of the address-sorted points
    into runs needs fewer requests.
    """
    plan: list[Request] = []
    for table in TABLES:
        spans = sorted(
            ((name, span) for name, span in points.items() if span.table == table),
            key=lambda item: (item[1].address, item[1].width),
        )
        bits = table in BIT_TABLES
        plan += _group(
            table, spans, max_bits if bits else max_regs, max_gap * 16 if bits else max_gap
        )
    return tuple(plan)


def _group(
    table: Table, spans: list[tuple[str, Span]], max_count: int, max_gap: int
) -> list[Request]:
    requests: list[Request] = []
    start = end = 0
    names: list[str] = []
    for name, span in spans:
        span_end = span.address + span.width
        fits = names and span.address - end <= max_gap and max(end, span_end) - start <= max_count
        if not fits:
            if names:
                requests.append(Request(table, start, end - start, tuple(names)))
            start, end, names = span.address, span_end, []
        names.append(name)
        end = max(end, span_end)
    if names:
        requests.append(Request(table, start, end - start, tuple(names)))
    return requests
