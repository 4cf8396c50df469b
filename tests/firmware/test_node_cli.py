"""`cimedge node ...` against the real firmware on a pseudo-terminal; flash with a fake mpremote."""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import subprocess
import threading
import tty
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for

from cimedge.provisioning import node as node_cli
from cimedge.provisioning.cli import main
from cimedge.tools.sim.node import SimNode


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Any:  # noqa: ANN401
    """One node for the commands that only read."""
    n = SimNode(tmp_path_factory.mktemp("cli") / "flash", channels=2)
    n.start()
    n.set_value(0, 12.5)
    n.set_value(1, None)
    rounds = "import hw_sim\n_r = hw_sim.node.sampler.rounds"
    first = n.exec(rounds)
    wait_for(lambda: n.exec(rounds) > first)  # sampled since
    yield n
    n.close()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["node", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_scan_finds_the_node(shared: SimNode, capsys) -> None:  # noqa: ANN001
    code, out, _ = run(capsys, "scan", "--port", shared.port, "--last", "3")
    assert (code, out) == (0, "unit   1  firmware 1.0.0, 2 channels, status sensor fault\n")
    code, out, _ = run(capsys, "scan", "--port", shared.port, "--first", "2", "--last", "3")
    assert out == f"no node answered on {shared.port} at 9600 baud\n"


def test_scan_json(shared: SimNode, capsys) -> None:  # noqa: ANN001
    code, out, _ = run(capsys, "scan", "--port", shared.port, "--last", "2", "--json")
    found = json.loads(out)
    assert code == 0
    assert [(n["unit"], n["version"], n["channels"]) for n in found] == [(1, "1.0.0", 2)]


def test_info(shared: SimNode, capsys) -> None:  # noqa: ANN001
    code, out, _ = run(capsys, "info", "--port", shared.port)
    out = re.sub(r"uptime    .*", "uptime    X", out)
    assert (code, out) == (0, f"""unit 1 on {shared.port} at 9600 baud
firmware  1.0.0
uptime    X
status    sensor fault
channels  2 (sampled every 1000 ms)
  ch0     12.5   (scale 1, offset 0)
  ch1     no reading   (scale 1, offset 0)
""")


def test_info_json(shared: SimNode, capsys) -> None:  # noqa: ANN001
    code, out, _ = run(capsys, "info", "--port", shared.port, "--json")
    got = json.loads(out)
    assert code == 0
    assert got["values"] == [12.5, None] and got["status_bits"] == ["sensor fault"]
    assert got["config"] == {"address": 1, "baud": 9600, "period_ms": 1000, "ch0.scale": 1.0,
                             "ch0.offset": 0.0, "ch1.scale": 1.0, "ch1.offset": 0.0}


def test_no_answer_is_one_sentence(shared: SimNode, capsys) -> None:  # noqa: ANN001
    code, out, err = run(capsys, "info", "--port", shared.port, "--unit", "5", "--timeout", "0.1")
    assert (code, out) == (1, "")
    assert err == (f"cimedge: no answer from unit 5 on {shared.port} at 9600 baud within 0.1 s "
                   "(check the address, the baud rate and the A/B wiring)\n")


def test_a_missing_port(capsys) -> None:  # noqa: ANN001
    code, _, err = run(capsys, "info", "--port", "/dev/no-such-port")
    assert (code, err) == (1, "cimedge: cannot open /dev/no-such-port: No such file or directory\n")


def test_config_writes_validates_and_reads_back(sim, capsys) -> None:  # noqa: ANN001
    n = sim()
    code, out, _ = run(capsys, "config", "--port", n.port, "--set", "period_ms=500",
                       "--set", "ch1.offset=-3.5", "--set", "address=12")
    assert (code, out) == (0, """address      12
baud         9600
period_ms    500
ch0.scale    1
ch0.offset   0
ch1.scale    1
ch1.offset   -3.5
""")
    code, out, _ = run(capsys, "config", "--port", n.port, "--unit", "12", "--json")
    assert json.loads(out)["ch1.offset"] == -3.5


@pytest.mark.parametrize(("setting", "why"), [
    ("ch0.scale=0", "ch0.scale=0: must be a finite number other than 0"),
    ("ch1.offset=inf", "ch1.offset=inf: must be a finite number"),
    ("ch0.scale=1e39", "ch0.scale=1e39: must be a finite number other than 0"),  # float32 overflow
    ("address=0", "address=0: must be a whole number 1-247"),
    ("baud=9601", "baud=9601: must be one of 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200"),
    ("period_ms=fast", "period_ms=fast: must be a whole number 10-60000"),
    ("ch2.scale=1", "ch2.scale: no such setting on this node (it has address, baud, period_ms, "
                    "ch0.scale, ch0.offset, ch1.scale, ch1.offset)"),
    ("period_ms", "--set period_ms: write it as KEY=VALUE, for example period_ms=500"),
])
def test_config_refuses_bad_values_before_writing(shared: SimNode, capsys, setting: str,  # noqa: ANN001
                                                  why: str) -> None:
    code, out, err = run(capsys, "config", "--port", shared.port, "--set", setting)
    assert (code, out, err) == (1, "", f"cimedge: {why}\n")


def test_a_refusal_by_the_node_is_reported(sim, capsys, monkeypatch) -> None:  # noqa: ANN001
    n = sim()
    monkeypatch.setattr(node_cli, "check_setting", lambda key, text, n: (key, int(text)))
    code, _, err = run(capsys, "config", "--port", n.port, "--set", "period_ms=5")
    assert code == 1
    assert err == ("cimedge: unit 1 refused the configuration (device exception 3: unit 1 "
                   "holding 200: illegal data value); it keeps the old one\n")


# ---- flash: mpremote is not run here (no board); its commands are --------------------------


class FakeBoard:
    """Plays mpremote: keeps what ``fs cp`` copies, answers the hash check from it."""

    def __init__(self, corrupt: str = "") -> None:
        self.files: dict[str, bytes] = {}
        self.calls: list[list[str]] = []
        self.corrupt = corrupt

    def __call__(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        self.calls.append(argv)
        assert argv[:3] == ["mpremote", "connect", "/dev/ttyACM0"]
        out = ""
        if argv[3:5] == ["fs", "cp"]:
            data = Path(argv[5]).read_bytes()
            name = argv[6].removeprefix(":")
            self.files[name] = data + (b"#" if name == self.corrupt else b"")
        elif argv[3] == "exec" and "hashlib" in argv[4]:
            out = json.dumps({k: hashlib.sha256(v).hexdigest() for k, v in self.files.items()})
        return subprocess.CompletedProcess(argv, 0, out + "\n", "")


def test_flash_copies_verifies_and_boots(fw: Any, board: dict[str, Any]) -> None:  # noqa: ANN401
    fake = FakeBoard()
    done = node_cli.flash("/dev/ttyACM0", board, b"\x01" * 56, None, run=fake)
    steps = [c[3] if c[3] != "fs" else "cp " + c[6] for c in fake.calls]
    assert steps[:2] == ["reset", "exec"] and steps[-2:] == ["exec", "reset"]
    copied = [s.removeprefix("cp :") for s in steps[2:-2]]
    assert copied[-1] == "main.py" and copied[-2] == "slot"  # the board boots it only when whole
    assert set(copied) == set(fw.flash_files(board, b"\x01" * 56))
    assert fake.files["fwkey.pub"] == b"01" * 56 + b"\n"
    assert done == {"port": "/dev/ttyACM0", "files": len(copied), "bytes": sum(
        len(v) for v in fake.files.values()), "version": "1.0.0", "update_staged": False}


def test_flash_stages_an_update_image(fw: Any, board: dict[str, Any], tmp_path: Path) -> None:  # noqa: ANN401
    key = fw.LmsKey.generate(tmp_path / "k", height=5)
    image = fw.build_image(fw.app_files(), (1, 0, 1), key)
    fake = FakeBoard()
    node_cli.flash("/dev/ttyACM0", board, key.public(), image, run=fake)
    assert fake.files["update.bin"] == image
    assert list(fake.files)[-1] == "main.py"


def test_flash_read_back_mismatch_is_an_error(board: dict[str, Any]) -> None:
    with pytest.raises(node_cli.NodeError, match=r"^read-back of a/rtu.py on /dev/ttyACM0 differs "
                                                 r"from what was sent: flash again$"):
        node_cli.flash("/dev/ttyACM0", board, None, None, run=FakeBoard(corrupt="a/rtu.py"))


def test_flash_failure_of_mpremote_is_one_sentence(board: dict[str, Any]) -> None:
    def broken(argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(argv, 1, "", "Traceback...\nmpremote: failed to access "
                                                        "/dev/ttyACM0 (it may be in use)\n")
    with pytest.raises(node_cli.NodeError, match=r"^mpremote failed at reset on /dev/ttyACM0: "
                                                 r"mpremote: failed to access /dev/ttyACM0"):
        node_cli.flash("/dev/ttyACM0", board, None, None, run=broken, retries=1)


EXAMPLE = Path(__file__).parents[2] / "firmware" / "board.example.json"


def test_flash_option_errors(capsys, tmp_path: Path) -> None:  # noqa: ANN001
    (tmp_path / "u.cimfw").write_bytes(b"CIMFW\x01")
    image = str(tmp_path / "u.cimfw")
    code, _, err = run(capsys, "flash", "--port", "/dev/ttyACM0", "--image", image,
                       "--board", str(EXAMPLE))
    assert (code, err) == (1, "cimedge: --image needs --key: without the firmware key the node "
                              "refuses every update\n")
    (tmp_path / "board.json").write_text("[1, 2]")
    code, _, err = run(capsys, "flash", "--port", "/dev/ttyACM0", "--board",
                       str(tmp_path / "board.json"))
    assert (code, err) == (1, f"cimedge: {tmp_path / 'board.json'}: a board description is a "
                              "JSON object\n")


@pytest.mark.parametrize(("change", "why"), [
    ({"uart": None}, 'uart must be an object such as {"id": 1, "tx": 17, "rx": 16}'),
    ({"channels": []}, "channels must be a list of 1-32 channels"),
    ({"channels": [{"kind": "sim"}]}, 'channels[0].kind must be "adc" or "i2c"'),
    ({"channels": [{"kind": "i2c", "scl": 1, "sda": 2, "addr": 300}]},
     "channels[0].addr must be an I2C address 8-119"),
    ({"wdt_ms": 20000}, "wdt_ms must be a whole number 1000-8388"),
])
def test_flash_checks_the_board_description(capsys, tmp_path: Path, change: dict[str, Any],  # noqa: ANN001
                                            why: str) -> None:
    board = json.loads(EXAMPLE.read_text()) | change
    (tmp_path / "board.json").write_text(json.dumps(board))
    code, _, err = run(capsys, "flash", "--port", "/dev/ttyACM0", "--board",
                       str(tmp_path / "board.json"))
    assert (code, err) == (1, f"cimedge: {tmp_path / 'board.json'}: {why}\n")


def test_the_example_board_passes() -> None:
    node_cli.check_board(json.loads(EXAMPLE.read_text()), "board.example.json")


@pytest.mark.parametrize("command", ["flash", "scan", "info", "config"])
def test_every_command_has_help_with_an_example(command: str, capsys) -> None:  # noqa: ANN001
    with pytest.raises(SystemExit) as exit_:
        main(["node", command, "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and "\nexample: cimedge node " + command in out


def test_scan_finds_every_node_on_a_shared_bus(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    from cimedge.tools.sim.node_bus import SimBus

    with SimBus(tmp_path / "bus", units=(1, 2, 5)) as line:
        code, out, _ = run(capsys, "scan", "--port", line.port, "--last", "6")
        assert code == 0
        assert [int(row.split()[1]) for row in out.splitlines()] == [1, 2, 5]
        code, out, _ = run(capsys, "info", "--port", line.port, "--unit", "5", "--json")
        assert json.loads(out)["config"]["address"] == 5


def _answer_from_the_second_request(fd: int, answers: list[bytes]) -> None:
    """A slave at unit 1 that misses the first request (a frame lost on the line)."""
    from cimedge.drivers.modbus import rtu

    seen = 0
    while seen < 2:  # noqa: PLR2004  # the lost request, then the resend
        try:
            request = os.read(fd, 256)
        except OSError:  # the master closed the line: no resend came
            return
        seen += 1
        if seen == 2:  # noqa: PLR2004
            answer = rtu.frame(1, bytes([4, 12]) + struct.pack(">6H", 1, 3, 0, 9, 0, 2))
            answers.append(request)
            os.write(fd, answer)


@pytest.mark.parametrize(("retries", "found"), [("0", []), ("1", [1])])
def test_a_lost_request_is_resent(capsys, retries: str, found: list[int]) -> None:  # noqa: ANN001
    line, port = os.openpty()  # the slave's end, the master's (our CLI's) end
    tty.setraw(line)
    tty.setraw(port)
    answers: list[bytes] = []
    t = threading.Thread(target=_answer_from_the_second_request, args=(line, answers),
                         daemon=True)
    t.start()
    try:
        code, out, _ = run(capsys, "scan", "--port", os.ttyname(port), "--last", "1",
                           "--retries", retries, "--json")
        assert code == 0 and [n["unit"] for n in json.loads(out)] == found
    finally:
        os.close(port)
        t.join(5)
        os.close(line)
