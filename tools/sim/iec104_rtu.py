"""A pump-station RTU speaking IEC 60870-5-104, built on c104 (lib60870): the driver's peer.

c104 is an independent implementation (lib60870-C underneath), so the gateway's own APCI
code is tested against it rather than against itself. It is a test/simulator dependency
(``pip install 'cimedge[test]'``: wheels for x86_64 and aarch64); the gateway does not need it.

Points (common address 1): ``level`` IOA 1001 (short float, cyclic every ``cyclic_ms``),
``inflow`` 1002 (scaled value), ``pump_running`` 2001 (single point, the pump's feedback),
``breaker`` 2002 (double point), ``energy`` 4001 (integrated totals); commands: ``pump``
IOA 3001 (single command, select before operate) and ``breaker_cmd`` 3002 (double command,
select before operate), each reflected in its feedback point and sent spontaneously.
``rtu.set(name, value, quality=...)`` changes a value and sends it spontaneously.

As a process: ``python -m cimedge.tools.sim.iec104_rtu [--port 2404]`` prints
``listening PORT`` and serves until SIGTERM. ``LiteRtu`` is the same RTU without c104 (what
``cimedge demo --site pump_station`` runs).
"""

import argparse
import datetime
import signal
import socket
import sys
import threading
from typing import Any

PUMP_STATION = {"level": 1001, "inflow": 1002, "pump_running": 2001, "breaker": 2002,
                "energy": 4001, "pump": 3001, "breaker_cmd": 3002}


def free_port() -> int:
    """A loopback port free now (c104's server binds by number, not 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Rtu:
    """The simulated RTU; ``start()``/``stop()``, thread-safe ``set()``, counters."""

    def __init__(self, port: int = 0, common_address: int = 1, cyclic_ms: int = 0,
                 select_timeout_ms: int = 10000) -> None:
        import c104  # noqa: PLC0415  # a test dependency: imported only when a sim runs

        self.c104 = c104
        self.port = port or free_port()
        self.server = c104.Server(ip="127.0.0.1", port=self.port, tick_rate_ms=50,
                                  select_timeout_ms=select_timeout_ms, max_connections=4)
        self.station = self.server.add_station(common_address=common_address)
        T = c104.Type  # noqa: N806
        add = self.station.add_point
        self.points: dict[str, Any] = {
            "level": add(io_address=1001, type=T.M_ME_NC_1, report_ms=cyclic_ms),
            "inflow": add(io_address=1002, type=T.M_ME_NB_1),
            "pump_running": add(io_address=2001, type=T.M_SP_NA_1),
            "breaker": add(io_address=2002, type=T.M_DP_NA_1),
            "energy": add(io_address=4001, type=T.M_IT_NA_1),
        }
        self.points["pump"] = add(io_address=3001, type=T.C_SC_NA_1,
                                  command_mode=c104.CommandMode.SELECT_AND_EXECUTE)
        self.points["breaker_cmd"] = add(io_address=3002, type=T.C_DC_NA_1,
                                         command_mode=c104.CommandMode.SELECT_AND_EXECUTE)
        # c104 checks callback signatures, names and annotations included
        def pump(point: c104.Point, previous_info: c104.Information,
                 message: c104.IncomingMessage) -> c104.ResponseState:
            del previous_info
            return self._command("pump", point.value, message, "pump_running", bool(point.value))

        def breaker(point: c104.Point, previous_info: c104.Information,
                    message: c104.IncomingMessage) -> c104.ResponseState:
            del previous_info
            return self._command("breaker_cmd", point.value, message, "breaker", point.value)

        def clock(server: c104.Server, ip: str, date_time: datetime.datetime) -> c104.ResponseState:
            del server, ip, date_time
            with self.lock:
                self.clock_syncs += 1
            return c104.ResponseState.SUCCESS

        self.points["pump"].on_receive(callable=pump)
        self.points["breaker_cmd"].on_receive(callable=breaker)
        self.server.on_clock_sync(callable=clock)
        self.lock = threading.Lock()
        self.commands: list[tuple[str, Any]] = []
        self.clock_syncs = 0
        self.refuse = False  # answer commands with a negative confirmation
        self.stuck = False  # confirm commands but leave the feedback as it is
        with self.lock:
            self.points["level"].value = 1.75
            self.points["inflow"].value = c104.Int16(420)
            self.points["pump_running"].value = False
            self.points["breaker"].value = c104.Double.ON
            self.points["energy"].value = 123456

    def start(self) -> None:
        """Listen."""
        self.server.start()

    def stop(self) -> None:
        """Stop listening and close connections."""
        self.server.stop()

    def set(self, name: str, value: Any, quality: Any = None) -> None:
        """Change a monitored value (and its quality) and send it spontaneously."""
        point = self.points[name]
        with self.lock:
            point.value = value
            if quality is not None:
                point.quality = quality
        point.transmit(cause=self.c104.Cot.SPONTANEOUS)

    def _command(self, name: str, value: Any, message: Any, feedback: str, state: Any) -> Any:
        rs = self.c104.ResponseState
        with self.lock:
            self.commands.append((name, value))
        if self.refuse:
            return rs.FAILURE
        if not self.stuck and not message.is_select_command:
            threading.Thread(target=self.set, args=(feedback, state), daemon=True).start()
        return rs.SUCCESS


def main(argv: list[str] | None = None) -> None:
    """Serve the pump-station RTU until SIGTERM; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m cimedge.tools.sim.iec104_rtu",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cyclic-ms", type=int, default=1000)
    args = parser.parse_args(argv)
    rtu = Rtu(args.port, cyclic_ms=args.cyclic_ms)
    rtu.start()
    sys.stdout.write(f"listening {rtu.port}\n")
    sys.stdout.flush()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    rtu.stop()


if __name__ == "__main__":
    main()


class LiteRtu:
    """The same pump-station RTU without c104, for ``cimedge demo``: asyncio, our own APDU code.

    Not an independent implementation (the driver's tests use ``Rtu`` for that); it answers
    STARTDT, TESTFR, interrogations (100, 101), clock sync (103) and the two commands with
    select before operate, acknowledges I-frames and sends ``level`` every ``cyclic_s``.
    """

    def __init__(self, common_address: int = 1, cyclic_s: float = 1.0) -> None:
        from cimedge.drivers.iec104 import apci  # noqa: PLC0415

        self.apci, self.ca, self.cyclic_s = apci, common_address, cyclic_s
        self.values: dict[int, tuple[int, Any]] = {
            1001: (apci.M_ME_NC_1, 1.75), 1002: (apci.M_ME_NB_1, 420),
            2001: (apci.M_SP_NA_1, False), 2002: (apci.M_DP_NA_1, True),
            4001: (apci.M_IT_NA_1, 123456)}
        self.feedback = {3001: 2001, 3002: 2002}
        self.port = 0
        self.commands: list[tuple[int, bool]] = []
        self._server: Any = None
        self._writers: set[Any] = set()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen; the port bound."""
        import asyncio  # noqa: PLC0415

        self._server = await asyncio.start_server(self._serve, host, port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.close()

    def set(self, ioa: int, value: Any) -> None:
        """Change a value and send it spontaneously to every client."""
        type_id, _ = self.values[ioa]
        self.values[ioa] = (type_id, value)
        for w in list(self._writers):
            w.send_value(ioa, self.apci.COT_SPONTANEOUS)

    def _element(self, ioa: int) -> tuple[int, bytes]:
        import struct  # noqa: PLC0415

        a = self.apci
        type_id, v = self.values[ioa]
        if type_id == a.M_ME_NC_1:
            return type_id, struct.pack("<fB", v, 0)
        if type_id == a.M_ME_NB_1:
            return type_id, struct.pack("<hB", v, 0)
        if type_id == a.M_SP_NA_1:
            return type_id, bytes((int(v),))
        if type_id == a.M_DP_NA_1:
            return type_id, bytes((2 if v else 1,))
        return type_id, struct.pack("<iB", v, 0)

    async def _serve(self, reader: Any, writer: Any) -> None:
        import asyncio  # noqa: PLC0415
        import contextlib  # noqa: PLC0415

        a, rtu = self.apci, self
        state = {"ssn": 0, "rsn": 0, "on": False}

        def send(asdu: bytes) -> None:
            writer.write(a.i_frame(state["ssn"], state["rsn"], asdu))
            state["ssn"] = (state["ssn"] + 1) % 32768

        def send_value(ioa: int, cot: int) -> None:
            if state["on"]:
                type_id, element = rtu._element(ioa)
                send(a.asdu(type_id, cot, rtu.ca, ioa, element))

        writer.send_value = send_value
        self._writers.add(writer)

        async def cyclic() -> None:
            while True:
                await asyncio.sleep(self.cyclic_s)
                send_value(1001, a.COT_PERIODIC)

        ticker = asyncio.create_task(cyclic())
        buf = bytearray()
        try:
            while data := await reader.read(4096):
                buf += data
                for apdu in a.split(buf)[0]:
                    if apdu.format == "U":
                        if apdu.function == a.STARTDT_ACT:
                            state["on"] = True
                            writer.write(a.u_frame(a.STARTDT_CON))
                        elif apdu.function == a.TESTFR_ACT:
                            writer.write(a.u_frame(a.TESTFR_CON))
                        continue
                    if apdu.format != "I":
                        continue
                    state["rsn"] = (apdu.ssn + 1) % 32768
                    self._command(a.parse_asdu(apdu.asdu), send, send_value)
                    writer.write(a.s_frame(state["rsn"]))
        except OSError:
            pass
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            self._writers.discard(writer)
            writer.close()

    def _command(self, asdu: Any, send: Any, send_value: Any) -> None:
        a = self.apci
        ioa = int.from_bytes(asdu.body[:3], "little")
        element = asdu.body[3:]
        confirm = a.asdu(asdu.type_id, a.COT_ACTCON, self.ca, ioa, element)
        if asdu.type_id == a.C_IC_NA_1:
            send(confirm)
            for point in (1001, 1002, 2001, 2002):
                send_value(point, a.COT_INTERROGATED)
            send(a.asdu(asdu.type_id, a.COT_ACTTERM, self.ca, ioa, element))
        elif asdu.type_id == a.C_CI_NA_1:
            send(confirm)
            send_value(4001, 37)  # requested by general counter interrogation
            send(a.asdu(asdu.type_id, a.COT_ACTTERM, self.ca, ioa, element))
        elif asdu.type_id == a.C_CS_NA_1:
            send(confirm)
        elif asdu.type_id in (a.C_SC_NA_1, a.C_DC_NA_1) and ioa in self.feedback:
            send(confirm)
            if not element[0] & 0x80:  # execute (not select): move the feedback
                on = bool(element[0] & 1) if asdu.type_id == a.C_SC_NA_1 else element[0] & 3 == 2
                self.commands.append((ioa, on))
                self.set(self.feedback[ioa], on)
                send(a.asdu(asdu.type_id, a.COT_ACTTERM, self.ca, ioa, element))
