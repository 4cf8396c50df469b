"""v2 signed acks (DESIGN 4a): exact payload bytes, pycose agrees, and every ack a gateway refuses.

The gateway's side (AckCheck) is tested with each forgery an attacker on the broker could
make: a plain v1 map, garbage, its own key, a copied kid, a backend ack for another device,
a key that has ended, an operations key; and the uplink with a real store, where only an
ack naming the batch's signature prefix deletes it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from pycose.keys import OKPKey
from pycose.keys.curves import Ed25519
from pycose.messages import Sign1Message

from cimedge.cloud_sync import backend_keys as bk
from cimedge.cloud_sync import cose
from cimedge.cloud_sync.ack import (
    ack_aad,
    decode_signed_ack_payload,
    encode_ack,
    encode_signed_ack,
    signed_ack_payload,
)
from cimedge.cloud_sync.ackcheck import AckCheck, AckRefused
from cimedge.cloud_sync.cbor_limits import dumps_det
from cimedge.cloud_sync.reject import Reject
from cimedge.cloud_sync.uplink import Uplink
from cimedge.edge.model import Reading
from cimedge.edge.store import Store

DEV = "ps-0042"
PREFIX = bytes(range(8))


@pytest.fixture
def ingest() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def backend(tmp_path: Path, ingest: Ed25519PrivateKey) -> bk.BackendFile:
    ops = Ed25519PrivateKey.generate()
    bk.write(tmp_path / "backend.json", bk.BackendKeys((
        bk.entry_for(ingest, "ingest"), bk.entry_for(ops, "operations"))))
    return bk.BackendFile(tmp_path / "backend.json")


def test_payload_exact_bytes() -> None:
    # {1: 5, 2: true, 3: h'0001020304050607'}; a nack adds {4: "bad_signature"}
    assert signed_ack_payload(5, True, PREFIX).hex() == "a3" "0105" "02f5" "0348" + PREFIX.hex()
    assert signed_ack_payload(7, False, b"", "bad_signature").hex() == (
        "a4" "0107" "02f4" "0340" "046d" + b"bad_signature".hex())
    assert ack_aad(DEV) == dumps_det(["cim", 2, "ack", DEV]) == bytes.fromhex(
        "846363696d026361636b67") + DEV.encode()


def test_payload_refuses_what_it_cannot_say() -> None:
    for args in [(1, True, b""), (1, True, b"1234567"), (-1, True, PREFIX), (1, 1, PREFIX)]:
        with pytest.raises(ValueError):
            signed_ack_payload(*args)  # type: ignore[arg-type]


@settings(max_examples=100)
@given(st.integers(0, 2**64 - 1), st.booleans(), st.binary(min_size=8, max_size=8),
       st.text(max_size=600))
def test_payload_round_trip(seq: int, ok: bool, prefix: bytes, err: str) -> None:
    got = decode_signed_ack_payload(signed_ack_payload(seq, ok, prefix, err))
    assert got == (seq, ok, prefix, None if ok else (err or "refused")[:512])


@pytest.mark.parametrize("body", [
    {1: 1, 2: True}, {1: 1, 2: True, 3: PREFIX, 4: "x"}, {1: 1, 2: False, 3: PREFIX},
    {1: 1, 2: True, 3: b"short"}, {1: -1, 2: True, 3: PREFIX}, {1: 1, 2: 1, 3: PREFIX},
    {1: 1, 2: True, 3: PREFIX, 9: 0}, {"seq": 1, "ok": True}, [1, True, PREFIX],
    {1: 1, 2: False, 3: b"", 4: 7}])
def test_payload_malformed(body: object) -> None:
    with pytest.raises(Reject):
        decode_signed_ack_payload(dumps_det(body))


def test_pycose_verifies_a_signed_ack(ingest: Ed25519PrivateKey) -> None:
    """An independent COSE implementation accepts it with the AAD, and only with it."""
    data = encode_signed_ack(ingest, DEV, 9, True, PREFIX)
    protected, unprotected, payload, signature = cbor2.loads(data).value
    msg = Sign1Message.from_cose_obj([protected, dict(unprotected), payload, signature],
                                     allow_unknown_attributes=False)
    msg.key = OKPKey(crv=Ed25519, x=ingest.public_key().public_bytes_raw())
    msg.external_aad = dumps_det(["cim", 2, "ack", DEV])
    assert msg.verify_signature()
    msg.external_aad = dumps_det(["cim", 2, "ack", "ps-0043"])
    assert not msg.verify_signature()
    assert decode_signed_ack_payload(payload) == (9, True, PREFIX, None)


def test_a_valid_ack_is_believed(backend: bk.BackendFile, ingest: Ed25519PrivateKey) -> None:
    ack = AckCheck(DEV, backend).check(encode_signed_ack(ingest, DEV, 3, True, PREFIX))
    assert (ack.seq, ack.ok, ack.prefix, ack.err) == (3, True, PREFIX, None)
    nack = AckCheck(DEV, backend).check(encode_signed_ack(ingest, DEV, 4, False, b"", "x"))
    assert (nack.ok, nack.err, nack.prefix) == (False, "x", b"")


def forgeries(ingest: Ed25519PrivateKey, ops: Ed25519PrivateKey) -> dict[str, tuple[bytes, str]]:
    """Every ack an attacker (or a mistake) could put on the ack topic, and its kind."""
    mine = Ed25519PrivateKey.generate()
    kid = cose.kid_for(ingest.public_key().public_bytes_raw())
    return {
        "v1 map": (encode_ack(3, True), "unsigned"),
        "garbage": (b"\xa3garbage" + os.urandom(40), "malformed"),
        "empty": (b"", "malformed"),
        "tag 18, not COSE": (dumps_det(cbor2.CBORTag(18, [1, 2])), "malformed"),
        "own key": (encode_signed_ack(mine, DEV, 3, True, PREFIX), "unknown_key"),
        "operations key": (encode_signed_ack(ops, DEV, 3, True, PREFIX), "unknown_key"),
        "copied kid": (encode_signed_ack(mine, DEV, 3, True, PREFIX, kid=kid), "bad_signature"),
        "other device": (encode_signed_ack(ingest, "ps-0043", 3, True, PREFIX), "bad_signature"),
        "no aad": (cose.sign1(signed_ack_payload(3, True, PREFIX), ingest), "bad_signature"),
        "signed garbage": (cose.sign1(b"\xa1\x01", ingest, external_aad=ack_aad(DEV)),
                           "malformed"),
        "too large": (encode_signed_ack(ingest, DEV, 3, False, PREFIX, "e" * 512) + b"\0" * 600,
                      "malformed"),
    }


def test_every_forgery_is_refused_by_kind(tmp_path: Path, ingest: Ed25519PrivateKey) -> None:
    ops = Ed25519PrivateKey.generate()
    bk.write(tmp_path / "backend.json", bk.BackendKeys((
        bk.entry_for(ingest, "ingest"), bk.entry_for(ops, "operations"))))
    check = AckCheck(DEV, bk.BackendFile(tmp_path / "backend.json"))
    for name, (data, kind) in forgeries(ingest, ops).items():
        with pytest.raises(AckRefused) as e:
            check.check(data)
        assert e.value.kind == kind, name


def test_an_ended_key_is_refused(tmp_path: Path, ingest: Ed25519PrivateKey) -> None:
    bk.write(tmp_path / "backend.json", bk.BackendKeys((
        bk.entry_for(ingest, "ingest", not_after=time.time() - 1),)))
    with pytest.raises(AckRefused) as e:
        AckCheck(DEV, bk.BackendFile(tmp_path / "backend.json")).check(
            encode_signed_ack(ingest, DEV, 3, True, PREFIX))
    assert e.value.kind == "expired_key"


def test_a_replaced_backend_json_is_picked_up(tmp_path: Path, ingest: Ed25519PrivateKey) -> None:
    """A rollover: the new key is believed once the new file is in place, with no restart."""
    path = tmp_path / "backend.json"
    check = AckCheck(DEV, bk.BackendFile(path, min_interval=0))
    assert check.keys.error == f"{path} does not exist"
    with pytest.raises(AckRefused) as e:
        check.check(encode_signed_ack(ingest, DEV, 3, True, PREFIX))
    assert e.value.kind == "unknown_key"
    new = Ed25519PrivateKey.generate()
    bk.write(path, bk.BackendKeys((bk.entry_for(ingest, "ingest"), bk.entry_for(new, "ingest"))))
    assert check.check(encode_signed_ack(new, DEV, 3, True, PREFIX)).seq == 3
    (path).write_text("{broken")
    assert check.keys.refresh(force=True) is False  # an invalid file keeps the keys it had
    assert check.check(encode_signed_ack(new, DEV, 4, True, PREFIX)).seq == 4
    assert check.keys.error.startswith(f"{path}: not JSON")


# -- the uplink: delete only what the ack names ------------------------------------------------
def signed_batch(key: Ed25519PrivateKey):  # noqa: ANN201
    """A store ``make``: any signed message will do, the uplink reads only its signature."""
    return lambda seq, rows: cose.sign1(dumps_det([seq, len(rows)]), key,
                                        external_aad=cose.aad("batch", DEV))


async def test_uplink_deletes_only_on_a_matching_prefix(tmp_path: Path, backend: bk.BackendFile,
                                                       ingest: Ed25519PrivateKey) -> None:
    device = Ed25519PrivateKey.generate()
    async with Store(tmp_path / "buffer.sqlite") as store:
        up = Uplink(store, DEV, device, {"p.x": "m"}, ack_check=AckCheck(DEV, backend))
        now = time.time_ns()
        await store.append([Reading("p.x", now, 1.0)])
        batch = await store.build_batch("batch", 100, signed_batch(device), now)
        assert batch is not None
        prefix = cose.parse_sign1(batch.payload).signature[:8]
        other = bytes(b ^ 0xFF for b in prefix)
        await up.on_ack(encode_signed_ack(ingest, DEV, batch.seq, True, other))
        await up.on_ack(encode_ack(batch.seq, True))  # v1-style, as anyone could publish
        await up.on_ack(encode_signed_ack(ingest, "ps-0043", batch.seq, True, prefix))
        assert (await store.depth()).batches == 1  # nothing deleted
        assert dict(up.refused_acks) == {"wrong_prefix": 1, "unsigned": 1, "bad_signature": 1}
        await up.on_ack(encode_signed_ack(ingest, DEV, batch.seq, True, prefix))
        assert (await store.depth()).batches == 0
        await up.on_ack(encode_signed_ack(ingest, DEV, batch.seq, True, prefix))  # again
        assert (up.counters["acked"], up.counters["late_acks"], up.counters["bad_acks"]) == \
            (1, 1, 3)


async def test_v1_uplink_trusts_a_plain_ack(tmp_path: Path) -> None:
    device = Ed25519PrivateKey.generate()
    async with Store(tmp_path / "buffer.sqlite") as store:
        up = Uplink(store, DEV, device, {"p.x": "m"})
        now = time.time_ns()
        await store.append([Reading("p.x", now, 1.0)])
        batch = await store.build_batch("batch", 100, signed_batch(device), now)
        assert batch is not None
        await up.on_ack(b"\xff")
        await up.on_ack(encode_ack(batch.seq, True))
        assert (await store.depth()).batches == 0
        assert dict(up.refused_acks) == {"malformed": 1}
