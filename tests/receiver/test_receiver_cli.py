"""`cimedge registry ...` and `cimedge receiver stats|export`: exit codes and the exact text."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rxkit import T0, Device

from cimedge.cloud_sync.receiver import schema
from cimedge.cloud_sync.receiver.registry import Registry
from cimedge.cloud_sync.receiver.store import SqliteStore
from cimedge.cloud_sync.verify import verify_message
from cimedge.provisioning.cli import main as cimedge

HERE = Path(__file__).resolve()
README = HERE.parents[2] / "cloud_sync" / "receiver" / "README.md"
SEEN_NS = 1_764_000_000 * 10**9  # 2025-11-24T16:00:00Z


def fixed(dev: str, n: int) -> Device:
    return Device(dev, Ed25519PrivateKey.from_private_bytes(bytes([n]) * 32))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cimedge(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for name, dev in (("a", fixed("ps-0001", 1)), ("b", fixed("ps-0001", 2)),
                      ("c", fixed("lp-0002", 3))):
        out[name] = tmp_path / f"{name}.json"
        out[name].write_text(json.dumps(dev.enrollment()))
    (tmp_path / "bad.json").write_text('{"v": 1}')
    out["bad"] = tmp_path / "bad.json"
    return out


def test_registry_add_list_revoke(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                  files: dict[str, Path]) -> None:
    reg = str(tmp_path / "reg.sqlite")
    a, c = fixed("ps-0001", 1).kid.hex(), fixed("lp-0002", 3).kid.hex()
    assert run(capsys, "registry", "add", str(files["a"]), str(files["c"]), "--registry",
               reg) == (0, f"added ps-0001 (kid {a})\nadded lp-0002 (kid {c})\n", "")
    assert run(capsys, "registry", "revoke", "lp-0002", "--registry", reg) == (
        0, "revoked 1 key of lp-0002\n", "")
    code, out, _ = run(capsys, "registry", "list", "--registry", reg)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["device", "kid", "state", "site", "type", "valid", "location"]
    assert lines[1].split()[:4] == ["lp-0002", c, "revoked", "pump_station"]
    assert lines[2].split() == ["ps-0001", a, "active", "pump_station", "-", "Pump", "station",
                                "1"]
    code, out, _ = run(capsys, "registry", "list", "--json", "--registry", reg)
    assert [(k["device_id"], k["state"]) for k in json.loads(out)] == [
        ("lp-0002", "revoked"), ("ps-0001", "active")]


def test_registry_add_is_all_or_nothing(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                        files: dict[str, Path]) -> None:
    reg = tmp_path / "reg.sqlite"
    assert run(capsys, "registry", "add", str(files["a"]), str(files["bad"]), "--registry",
               str(reg)) == (1, "", f"cimedge: {files['bad']}: device_id: is missing\n")
    assert run(capsys, "registry", "list", "--registry", str(reg)) == (
        0, "(no keys enrolled)\n", "")


def test_registry_beside_the_db_and_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                           files: dict[str, Path]) -> None:
    db = str(tmp_path / "receiver.sqlite")
    assert run(capsys, "registry", "add", str(files["a"]), "--db", db)[0] == 0
    assert (tmp_path / "registry.sqlite").is_file()
    assert run(capsys, "registry", "revoke", "ps-9999", "--db", db) == (
        1, "", "cimedge: no enrolled key or device 'ps-9999'\n")
    assert run(capsys, "registry", "list", "--registry", str(tmp_path / "none.sqlite")) == (
        1, "", f"cimedge: {tmp_path / 'none.sqlite'}: no registry there; enroll devices with "
               "`cimedge registry add`\n")
    assert run(capsys, "registry", "add", str(tmp_path / "missing.json"), "--db", db) == (
        1, "", f"cimedge: {tmp_path / 'missing.json'}: cannot read: No such file or directory\n")


def test_registry_rotate(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                         files: dict[str, Path]) -> None:
    reg = str(tmp_path / "reg.sqlite")
    a, b = fixed("ps-0001", 1).kid.hex(), fixed("ps-0001", 2).kid.hex()
    assert run(capsys, "registry", "rotate", str(files["a"]), "--after-seq", "3",
               "--registry", reg) == (1, "", "cimedge: device 'ps-0001' is not enrolled: add "
                                             "its first key with `cimedge registry add`\n")
    run(capsys, "registry", "add", str(files["a"]), "--registry", reg)
    assert run(capsys, "registry", "rotate", str(files["b"]), "--after-seq", "-1",
               "--registry", reg) == (1, "", "cimedge: --after-seq must be a seq (0 or more), "
                                             "not -1\n")
    assert run(capsys, "registry", "rotate", str(files["b"]), "--after-seq", "41",
               "--registry", reg) == (0, f"ps-0001: new key {b} active; retired {a} after "
                                         "seq 41\n", "")
    assert run(capsys, "registry", "rotate", str(files["b"]), "--after-seq", "41",
               "--registry", reg) == (0, f"ps-0001: new key {b} active; no active key to "
                                         "retire\n", "")
    assert run(capsys, "registry", "rotate", str(files["a"]), "--after-seq", "50",
               "--registry", reg) == (1, "", f"cimedge: kid {a} is retired: a rotation needs a "
                                             "key that is not retired or revoked\n")
    registry = Registry(reg, readonly=True)
    info = registry.lookup(bytes.fromhex(a))
    registry.close()
    assert info is not None
    assert (info.status, info.retired_after_seq) == ("retired", 41)


@pytest.fixture
def receiver_db(tmp_path: Path, registry: Registry, device: Device) -> Path:
    path = tmp_path / "rx.sqlite"
    store = SqliteStore(path)
    for seq in (1, 2, 5):
        store.store(verify_message(device.dev, "batch", device.batch(seq, n=1),
                                   registry.lookup, now=time.time()))
    store.count_reject("bad_signature", device.dev)
    store.count_reject("unknown_kid", None)
    store.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE messages SET received_ns = ?", (SEEN_NS,))
    return path


def test_receiver_stats(capsys: pytest.CaptureFixture[str], receiver_db: Path,
                        device: Device) -> None:
    assert run(capsys, "receiver", "stats", "--db", str(receiver_db)) == (0, "\n".join([
        "device   last seq  messages  missing  last seen             gaps  rejects",
        f"{device.dev}         5         3        2  2025-11-24T16:00:00Z  3-4   "
        "bad_signature 1",
        "rejects from unknown devices or topics: unknown_kid 1", ""]), "")
    code, out, _ = run(capsys, "receiver", "stats", "--json", "--db", str(receiver_db))
    assert code == 0
    assert json.loads(out) == {
        "schema_version": schema.LATEST, "unknown_rejects": {"unknown_kid": 1},
        "devices": {device.dev: {"last_seq": 5, "messages": 3, "missing": 2,
                                 "last_seen": "2025-11-24T16:00:00.000000Z", "gaps": [[3, 4]],
                                 "rejects": {"bad_signature": 1}}}}


def test_receiver_export_csv(capsys: pytest.CaptureFixture[str], receiver_db: Path,
                             device: Device, tmp_path: Path) -> None:
    code, out, err = run(capsys, "receiver", "export", "--db", str(receiver_db), "--dev",
                         device.dev, "--since", str(T0 + 1.5))  # between seq 1 and 2
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "dev,seq,name,time,value,unit,quality"
    assert len(lines) == 1 + 2 * 3  # seq 2 and 5, three readings each
    t2 = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(T0 + 2))
    assert lines[1].startswith(f"{device.dev},2,{device.dev}:ps01.")
    assert f",{t2}." in lines[1]
    assert any(line.endswith(",true,,good") for line in lines)   # the pump, a bool
    assert any(line.endswith(",,,comm") for line in lines)       # the failed poll
    out_file = tmp_path / "x.csv"
    assert run(capsys, "receiver", "export", "--db", str(receiver_db), "--dev", device.dev,
               "--out", str(out_file)) == (0, "", f"wrote 9 readings of {device.dev} to "
                                                  f"{out_file}\n")
    assert len(out_file.read_text().splitlines()) == 10


def test_receiver_errors_are_one_line(capsys: pytest.CaptureFixture[str],
                                      tmp_path: Path) -> None:
    assert run(capsys, "receiver", "stats", "--db", str(tmp_path / "no.db")) == (
        1, "", f"cimedge: {tmp_path / 'no.db'}: no receiver database there\n")
    code, out, err = run(capsys, "receiver", "run", "--db", "postgresql://u@127.0.0.1:1/y")
    assert (code, out) == (1, "")
    assert err.startswith("cimedge: postgresql://127.0.0.1:1/y: cannot connect to PostgreSQL: ")
    assert err.count("\n") == 1
    with pytest.raises(SystemExit) as e:
        cimedge(["receiver", "export", "--db", "x", "--dev", "d", "--since", "yesterday"])
    assert e.value.code == 2
    assert "argument --since: 'yesterday' is not an RFC 3339 time" in capsys.readouterr().err


def test_parse_time() -> None:
    from cimedge.cloud_sync.receiver.views import parse_time

    assert parse_time("2025-03-01T08:00:00Z") == 1740816000.0
    assert parse_time("2025-03-01T09:00:00+01:00") == 1740816000.0
    assert parse_time("2025-03-01") == 1740787200.0
    assert parse_time("1740816000.5") == 1740816000.5
    for bad in ("2025-03-01T08:00:00", "nan", "soon"):
        with pytest.raises(ValueError):  # noqa: PT011 - the message is tested via the CLI
            parse_time(bad)


COMMANDS = [("receiver", "run"), ("receiver", "stats"), ("receiver", "export"),
            ("registry", "add"), ("registry", "list"), ("registry", "revoke"),
            ("registry", "rotate")]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help_and_a_readme_entry(capsys: pytest.CaptureFixture[str],
                                                   command: tuple[str, str]) -> None:
    with pytest.raises(SystemExit) as e:
        cimedge([*command, "--help"])
    assert e.value.code == 0
    assert "example: cimedge " + " ".join(command) in capsys.readouterr().out
    assert f"cimedge {' '.join(command)}" in README.read_text()
