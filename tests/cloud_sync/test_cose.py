"""COSE_Sign1: exact bytes, strict parsing, tamper detection, and a cross-check with pycose."""

from __future__ import annotations

import hashlib

import cbor2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from pycose.algorithms import EdDSA
from pycose.headers import KID, Algorithm
from pycose.keys import OKPKey
from pycose.keys.curves import Ed25519
from pycose.messages import Sign1Message

from cimedge.cloud_sync.cbor_limits import dumps_det
from cimedge.cloud_sync.cose import (
    Sign1,
    aad,
    kid_for,
    parse_sign1,
    protected_header,
    sign1,
    verify1,
)
from cimedge.cloud_sync.reject import Reject

RFC8032_PUBLIC = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
GKID = bytes.fromhex("21fe31dfa154a261")
# sign1(b"hello") with the RFC 8032 test-1 key; pycose produces the same bytes (below).
GOLDEN = bytes.fromhex(
    "d2844da20127044821fe31dfa154a261a04568656c6c6f5840e868dc326076f6e17610f7bc96b350e86bbc"
    "de2b85da022274dc8bcb87ce5280c488aca2c8ef7e362d769a691b08c94a37911e2ddcc3a7994a9bd04690"
    "16a104")


def test_kid_is_the_sha256_prefix_of_the_raw_public_key(pub: bytes) -> None:
    assert pub.hex() == RFC8032_PUBLIC
    assert kid_for(pub) == hashlib.sha256(pub).digest()[:8] == GKID


def test_protected_header_bytes() -> None:
    assert protected_header(GKID) == bytes.fromhex("a201270448") + GKID  # {1: -8, 4: h'..'}


def test_sign1_golden(key: Ed25519PrivateKey) -> None:
    assert sign1(b"hello", key) == GOLDEN
    assert sign1(b"hello", key, GKID) == GOLDEN


def test_sign1_structure(key: Ed25519PrivateKey, pub: bytes) -> None:
    data = sign1(b"payload", key)
    assert data[:2] == b"\xd2\x84"  # tag 18, array of 4
    tag = cbor2.loads(data)
    protected, unprotected, payload, signature = tag.value
    assert (tag.tag, protected, dict(unprotected), payload) == (
        18, protected_header(GKID), {}, b"payload")
    # The signature covers Sig_structure = ["Signature1", protected, h'', payload].
    to_be_signed = cbor2.dumps(["Signature1", protected, b"", b"payload"])
    key.public_key().verify(signature, to_be_signed)  # raises if not


def test_round_trip(key: Ed25519PrivateKey, pub: bytes) -> None:
    msg = parse_sign1(sign1(b"x" * 1000, key))
    assert msg == Sign1(protected=protected_header(GKID), kid=GKID, payload=b"x" * 1000,
                        signature=msg.signature)
    assert verify1(msg, pub)
    other = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    assert not verify1(msg, other)


def test_explicit_kid_is_used(key: Ed25519PrivateKey) -> None:
    assert parse_sign1(sign1(b"", key, b"12345678")).kid == b"12345678"


def test_every_tampered_byte_fails(key: Ed25519PrivateKey, pub: bytes) -> None:
    data = sign1(b"\x00\x01hello", key)
    for i in range(len(data)):
        for flip in (0x01, 0x80):
            bad = bytearray(data)
            bad[i] ^= flip
            try:
                msg = parse_sign1(bytes(bad))
            except Reject as e:
                assert e.reason in ("malformed_cbor", "malformed_cose", "too_deep")
                continue
            assert not verify1(msg, pub), (i, flip)


def message(*parts: object, tag: int = 18) -> bytes:
    return dumps_det(cbor2.CBORTag(tag, list(parts)))


SIG = b"\x00" * 64
GOOD_HDR = protected_header(GKID)


@pytest.mark.parametrize(("data", "expected", "why"), [
    (dumps_det([GOOD_HDR, {}, b"", SIG]), "malformed_cose", "untagged"),
    (message(GOOD_HDR, {}, b"", SIG, tag=17), "malformed_cbor", "tag 17 (COSE_Mac0)"),
    (message(GOOD_HDR, {}, b""), "malformed_cose", "array of 3"),
    (message(GOOD_HDR, {}, b"", SIG, b""), "malformed_cose", "array of 5"),
    (dumps_det(cbor2.CBORTag(18, {1: 2})), "malformed_cose", "map, not array"),
    (message({1: -8, 4: GKID}, {}, b"", SIG), "malformed_cose", "protected not a bstr"),
    (message(b"", {}, b"", SIG), "malformed_cose", "empty protected header"),
    (message(dumps_det({1: -8}), {}, b"", SIG), "malformed_cose", "no kid"),
    (message(dumps_det({4: GKID}), {}, b"", SIG), "malformed_cose", "no alg"),
    (message(dumps_det({1: -7, 4: GKID}), {}, b"", SIG), "malformed_cose", "ES256"),
    (message(dumps_det({1: "EdDSA", 4: GKID}), {}, b"", SIG), "malformed_cose", "alg as text"),
    (message(dumps_det({1: -8, 4: GKID[:7]}), {}, b"", SIG), "malformed_cose", "kid of 7"),
    (message(dumps_det({1: -8, 4: GKID + b"\x00"}), {}, b"", SIG), "malformed_cose", "kid 9"),
    (message(dumps_det({1: -8, 4: GKID.hex()}), {}, b"", SIG), "malformed_cose", "kid text"),
    (message(dumps_det({1: -8, 4: GKID, 2: [1]}), {}, b"", SIG), "malformed_cose", "crit"),
    (message(GOOD_HDR + b"\x00", {}, b"", SIG), "malformed_cose", "trailing in protected"),
    (message(bytes.fromhex("bf0127044821fe31dfa154a261ff"), {}, b"", SIG), "malformed_cose",
     "indefinite protected map"),
    (message(GOOD_HDR, [], b"", SIG), "malformed_cose", "unprotected not a map"),
    (message(GOOD_HDR, {4: GKID}, b"", SIG), "malformed_cose", "kid also unprotected"),
    (message(GOOD_HDR, {1: -8}, b"", SIG), "malformed_cose", "alg also unprotected"),
    (message(GOOD_HDR, {}, None, SIG), "malformed_cose", "detached payload"),
    (message(GOOD_HDR, {}, "text", SIG), "malformed_cose", "payload as text"),
    (message(GOOD_HDR, {}, b"", SIG[:63]), "malformed_cose", "signature of 63"),
    (message(GOOD_HDR, {}, b"", SIG + b"\x00"), "malformed_cose", "signature of 65"),
    (message(GOOD_HDR, {}, b"", None), "malformed_cose", "signature nil"),
    (message(GOOD_HDR, {}, b"", SIG) + b"\x00", "malformed_cbor", "trailing byte"),
    (message(GOOD_HDR, {5: [[1]]}, b"", SIG), "too_deep", "deep unprotected value"),
    (b"", "malformed_cbor", "empty"),
])
def test_parse_rejects(data: bytes, expected: str, why: str) -> None:
    with pytest.raises(Reject) as e:
        parse_sign1(data)
    assert e.value.reason == expected, why


def test_unprotected_may_hold_other_labels(key: Ed25519PrivateKey, pub: bytes) -> None:
    good = cbor2.loads(sign1(b"p", key)).value
    msg = parse_sign1(message(good[0], {33: b"x"}, good[2], good[3]))
    assert verify1(msg, pub)  # the unprotected bucket is not signed


def test_size_limit(key: Ed25519PrivateKey) -> None:
    data = sign1(b"x" * 100, key)
    assert parse_sign1(data, max_size=len(data)).payload == b"x" * 100
    with pytest.raises(Reject) as e:
        parse_sign1(data, max_size=len(data) - 1)
    assert e.value.reason == "too_large"


def test_verify1_refuses_a_bad_public_key(key: Ed25519PrivateKey) -> None:
    with pytest.raises(ValueError):
        verify1(parse_sign1(sign1(b"", key)), b"\x00" * 31)


# Cross-check with pycose, an independent COSE implementation.

def pycose_key(key: Ed25519PrivateKey, private: bool) -> OKPKey:
    pub = key.public_key().public_bytes_raw()
    if not private:
        return OKPKey(crv=Ed25519, x=pub)
    d = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                          serialization.NoEncryption())
    return OKPKey(crv=Ed25519, x=pub, d=d)


def pycose_decode(data: bytes) -> Sign1Message:
    # pycose 1.1.0's Sign1Message.decode() wants the tag's content as a list, but cbor2 6
    # hands tag contents over as a tuple; so unwrap here and let pycose do the rest.
    tag = cbor2.loads(data)
    assert tag.tag == 18
    protected, unprotected, payload, signature = tag.value
    return Sign1Message.from_cose_obj([protected, dict(unprotected), payload, signature],
                                      allow_unknown_attributes=True)


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=300))
def test_pycose_verifies_ours(payload: bytes) -> None:
    key = Ed25519PrivateKey.generate()
    data = sign1(payload, key)
    msg = pycose_decode(data)
    assert msg.phdr == {Algorithm: EdDSA, KID: kid_for(key.public_key().public_bytes_raw())}
    assert msg.uhdr == {}
    msg.key = pycose_key(key, private=False)
    assert msg.verify_signature()
    tampered = pycose_decode(sign1(payload + b"!", key))
    tampered.payload = payload
    tampered.key = pycose_key(key, private=False)
    assert not tampered.verify_signature()


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=300))
def test_we_verify_pycose(payload: bytes) -> None:
    key = Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes_raw()
    theirs = Sign1Message(phdr={Algorithm: EdDSA, KID: kid_for(pub)}, payload=payload)
    theirs.key = pycose_key(key, private=True)
    data = theirs.encode()
    msg = parse_sign1(data)
    assert (msg.kid, msg.payload) == (kid_for(pub), payload)
    assert verify1(msg, pub)
    assert data == sign1(payload, key)  # Ed25519 is deterministic: the same bytes


# Contract v2: external_aad = deterministic CBOR of ["cim", 2, kind, dev] (DESIGN.md 4a).

def test_aad_bytes() -> None:
    # 84 array of 4 | 63 text(3) "cim" | 02 | 65 text(5) "batch" | 65 text(5) "gw-01"
    assert aad("batch", "gw-01") == b"\x84\x63cim\x02\x65batch\x65gw-01"
    assert aad("ack", "ps-0042") == b"\x84\x63cim\x02\x63ack\x67ps-0042"
    assert aad("batch", "gw-01", contract=1) == b""
    for bad in (("cmd", "gw-01", 2), ("batch", "", 2), ("batch", "gw-01", 3)):
        with pytest.raises(ValueError):
            aad(*bad)


def test_external_aad_is_signed_not_sent(key: Ed25519PrivateKey, pub: bytes) -> None:
    bound = aad("batch", "gw-01")
    data = sign1(b"p", key, external_aad=bound)
    assert bound not in data
    tag = cbor2.loads(data)
    protected, _, payload, signature = tag.value
    # RFC 9052 §4.4: Sig_structure = ["Signature1", protected, external_aad, payload]
    key.public_key().verify(signature, dumps_det(["Signature1", protected, bound, payload]))
    msg = parse_sign1(data)
    assert verify1(msg, pub, external_aad=bound)
    assert not verify1(msg, pub)  # v1's empty AAD
    assert not verify1(msg, pub, external_aad=aad("event", "gw-01"))  # another kind
    assert not verify1(msg, pub, external_aad=aad("batch", "gw-02"))  # another device
    assert not verify1(parse_sign1(sign1(b"p", key)), pub, external_aad=bound)


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(["batch", "event", "ack"]),
       st.from_regex(r"[a-z0-9-]{3,64}", fullmatch=True))
def test_pycose_verifies_ours_with_external_aad(payload: bytes, kind: str, dev: str) -> None:
    key = Ed25519PrivateKey.generate()
    bound = aad(kind, dev)
    msg = pycose_decode(sign1(payload, key, external_aad=bound))
    msg.key = pycose_key(key, private=False)
    msg.external_aad = bound
    assert msg.verify_signature()
    msg.external_aad = b""
    assert not msg.verify_signature()


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(["batch", "event", "ack"]),
       st.from_regex(r"[a-z0-9-]{3,64}", fullmatch=True))
def test_we_verify_pycose_with_external_aad(payload: bytes, kind: str, dev: str) -> None:
    key = Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes_raw()
    bound = aad(kind, dev)
    theirs = Sign1Message(phdr={Algorithm: EdDSA, KID: kid_for(pub)}, payload=payload,
                          external_aad=bound)
    theirs.key = pycose_key(key, private=True)
    data = theirs.encode()
    msg = parse_sign1(data)
    assert verify1(msg, pub, external_aad=bound)
    assert not verify1(msg, pub)
    assert data == sign1(payload, key, external_aad=bound)
