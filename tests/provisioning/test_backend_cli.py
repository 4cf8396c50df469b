"""backend.json and `cimedge backend`: keys 0600, every bad file one sentence, doctor's check."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from provkit import cimedge

from cimedge.cloud_sync import backend_keys as bk
from cimedge.cloud_sync.cose import kid_for


def kid_of(key_file: Path) -> str:
    return kid_for(bk.load_private_key(key_file).public_key().public_bytes_raw()).hex()


def test_keygen_rollover_and_list(tmp_path: Path) -> None:
    b = tmp_path / "backend.json"
    out = cimedge("backend", "keygen", "--role", "ingest", "--key", tmp_path / "in-a.key",
                  "--backend", b)
    assert out.returncode == 0, out.stderr
    a = kid_of(tmp_path / "in-a.key")
    assert out.stdout == f"ingest key {tmp_path}/in-a.key (0600, kid {a}), listed in {b}\n"
    assert stat.S_IMODE((tmp_path / "in-a.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(b.stat().st_mode) == 0o644
    # the next ingest key, and the old one's end: both listed, so a gateway takes both
    out = cimedge("backend", "keygen", "--role", "ingest", "--key", tmp_path / "in-b.key",
                  "--backend", b)
    assert out.returncode == 0, out.stderr
    bb = kid_of(tmp_path / "in-b.key")
    out = cimedge("backend", "expire", a, "--at", "2030-01-01T00:00:00Z", "--backend", b)
    assert (out.returncode, out.stdout) == (0, f"ingest key {a} ends 2030-01-01T00:00:00Z\n")
    out = cimedge("backend", "list", "--backend", b)
    assert out.stdout == (f"{a}  ingest      until 2030-01-01T00:00:00Z\n"
                          f"{bb}  ingest      no end\n")
    doc = json.loads(b.read_text())
    assert doc["v"] == 1 and [k["kid"] for k in doc["keys"]] == [a, bb]
    assert doc["keys"][0] == {"kid": a, "public_key": doc["keys"][0]["public_key"],
                              "role": "ingest", "not_after": "2030-01-01T00:00:00Z"}
    assert cimedge("backend", "remove", a, "--backend", b).returncode == 0
    out = cimedge("backend", "remove", bb, "--backend", b)  # the last ingest key stays
    assert (out.returncode, out.stderr) == (1, (
        f"cimedge: KID: {bb} is the last ingest key: v2 gateways would refuse every ack; "
        "add its successor first\n"))
    out = cimedge("backend", "keygen", "--role", "ingest", "--key", tmp_path / "in-b.key",
                  "--backend", b)
    assert (out.returncode, out.stderr) == (1, f"cimedge: {tmp_path}/in-b.key: already holds "
                                               "a key; pass --force to replace it\n")


def test_add_migrates_the_old_backend_key_file(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "backend.pub").write_bytes(pem)
    raw = key.public_key().public_bytes_raw()
    (tmp_path / "b64").write_text(base64.b64encode(raw).decode())
    b = tmp_path / "backend.json"
    out = cimedge("backend", "add", tmp_path / "backend.pub", "--role", "operations",
                  "--backend", b)
    assert (out.returncode, out.stdout) == (0, f"listed operations key {kid_for(raw).hex()} in "
                                               f"{b}\n")
    out = cimedge("backend", "add", tmp_path / "b64", "--role", "ingest", "--backend", b)
    assert (out.returncode, out.stderr) == (1, f"cimedge: {b}: already lists kid "
                                               f"{kid_for(raw).hex()} (role operations)\n")
    assert bk.load(b).of("operations")[0].public_key == raw


@pytest.mark.parametrize(("text", "reason"), [
    ("[]", 'must be a JSON object {"v": 1, "keys": [...]}'),
    ('{"v": 2, "keys": []}', "v must be 1, got 2"),
    ('{"v": 1, "keys": [{"kid": "00", "public_key": "", "role": "ingest"}]}',
     "keys[0]: public_key must be base64 of a raw 32-byte Ed25519 key"),
    ('{"v": 1, "keys": [{"kid": "0000000000000000", "public_key": "PK", "role": "ingest"}]}',
     "keys[0]: kid 0000000000000000 is not the kid of this public_key"),
    ('{"v": 1, "keys": [{"kid": "K", "public_key": "PK", "role": "admin"}]}',
     "keys[0]: role 'admin' is not one of ingest, operations"),
    ('{"v": 1, "keys": [{"kid": "K", "public_key": "PK", "role": "ingest", "x": 1}]}',
     "keys[0]: unknown field 'x'"),
    ('{"v": 1, "keys": [{"kid": "K", "public_key": "PK", "role": "ingest", '
     '"not_after": "2030-01-01"}]}', "keys[0]: not_after '2030-01-01' has no UTC offset"),
    ('{"v": 1, "keys": [{"kid": "K", "public_key": "PK", "role": "ingest"}, '
     '{"kid": "K", "public_key": "PK", "role": "operations"}]}',
     "keys[1]: kid K is listed twice"),
    ("{", "not JSON"),
])
def test_a_bad_backend_json_is_one_sentence(tmp_path: Path, text: str, reason: str) -> None:
    raw = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    kid = kid_for(raw).hex()
    text = text.replace('"PK"', json.dumps(base64.b64encode(raw).decode())).replace('"K"',
                                                                                    f'"{kid}"')
    (tmp_path / "backend.json").write_text(text)
    with pytest.raises(bk.BackendFileError) as e:
        bk.load(tmp_path / "backend.json")
    line = str(e.value).replace(f"{tmp_path}/backend.json", "F").replace(kid, "K")
    assert line.startswith(f"F: {reason}") and "\n" not in line, line


def test_the_cli_says_it_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "backend.json").write_text('{"v": 2, "keys": []}')
    out = cimedge("backend", "list", "--backend", tmp_path / "backend.json")
    assert (out.returncode, out.stdout, out.stderr) == (
        1, "", f"cimedge: {tmp_path}/backend.json: v must be 1, got 2\n")


def test_a_key_others_can_read_is_refused(tmp_path: Path) -> None:
    bk.write_private_key(tmp_path / "in.key").public_key()
    (tmp_path / "in.key").chmod(0o640)
    with pytest.raises(bk.BackendFileError) as e:
        bk.load_private_key(tmp_path / "in.key")
    assert str(e.value) == (f"{tmp_path}/in.key: is readable by others (mode 640); run: "
                            f"chmod 600 {tmp_path}/in.key")


def test_install_puts_it_where_the_gateway_reads_it(tmp_path: Path) -> None:
    b = tmp_path / "backend.json"
    assert cimedge("backend", "keygen", "--role", "operations", "--key", tmp_path / "op.key",
                   "--backend", b).returncode == 0
    state = tmp_path / "gw"
    state.mkdir()
    out = cimedge("backend", "install", b, "--state-dir", state)
    assert out.returncode == 0, out.stderr
    assert bk.load(state / "backend.json") == bk.load(b)
    assert out.stdout.startswith(f"installed {state}/backend.json: ingest none; operations ")
    (tmp_path / "empty.json").write_text('{"v": 1, "keys": []}')
    out = cimedge("backend", "install", tmp_path / "empty.json", "--state-dir", state)
    assert (out.returncode, out.stderr) == (1, f"cimedge: {tmp_path}/empty.json: lists no key\n")
