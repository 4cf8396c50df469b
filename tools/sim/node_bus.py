"""Several simulated nodes on one RS-485 line, as a field bus has them: one port for the master.

What the master writes reaches every node; what any node answers reaches the master. Each node
is a ``SimNode`` (the real firmware); a relay thread joins their pseudo-terminals to the
line's. Collisions are not modelled: nodes with different addresses never talk at once.

    with SimBus(tmp / "bus", units=(1, 2, 5)) as line:
        cimedge node scan --port line.port      # finds 1, 2 and 5
"""

from __future__ import annotations

import contextlib
import os
import selectors
import threading
import tty
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from cimedge.tools.sim.node import SimNode, sim_board


class SimBus:
    """Nodes with addresses ``units`` on one line; ``port`` is the master's end of it."""

    def __init__(self, root: Path, units: Sequence[int], channels: int = 2) -> None:
        """Provision one node per unit under ``root``; nothing runs until ``start()``."""
        self.nodes = {u: SimNode(Path(root) / f"node{u}", board=sim_board(channels, unit=u))
                      for u in units}
        self._line, self._master_end = os.openpty()
        tty.setraw(self._master_end)
        self.port = os.ttyname(self._master_end)
        self._taps: list[int] = []
        self._stop = threading.Event()
        self._relay = threading.Thread(target=self._run, name="sim-bus", daemon=True)

    def start(self) -> str:
        """Power every node on and join them to the line; returns the master's port."""
        for node in self.nodes.values():
            node.start()
            fd = os.open(node.port, os.O_RDWR | os.O_NOCTTY)
            tty.setraw(fd)
            self._taps.append(fd)
        self._relay.start()
        return self.port

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._line, selectors.EVENT_READ)
        for fd in self._taps:
            sel.register(fd, selectors.EVENT_READ)
        while not self._stop.is_set():
            for key, _ in sel.select(timeout=0.1):
                try:
                    data = os.read(key.fd, 4096)
                except OSError:
                    continue
                targets = self._taps if key.fd == self._line else [self._line]
                for fd in targets:
                    with contextlib.suppress(OSError):
                        os.write(fd, data)
        sel.close()

    def close(self) -> None:
        """Stop the relay and every node."""
        self._stop.set()
        if self._relay.is_alive():
            self._relay.join()
        for fd in [*self._taps, self._line, self._master_end]:
            with contextlib.suppress(OSError):
                os.close(fd)
        for node in self.nodes.values():
            node.close()

    def __enter__(self) -> Self:
        """Power on."""
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Power off."""
        self.close()
