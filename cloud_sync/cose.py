"""COSE_Sign1 (RFC 9052) with EdDSA over Ed25519: sign, parse strictly, verify.

Contract v1 signs with an empty external AAD; v2 binds the message to its device and kind
with ``external_aad = aad(kind, dev)``, the deterministic CBOR of ``["cim", 2, kind, dev]``
(DESIGN.md section 4a), which the receiver rebuilds from the topic.
"""

from __future__ import annotations

import hashlib
from typing import NoReturn

import cbor2
import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from cimedge.cloud_sync.cbor_limits import dumps_det, loads_untrusted
from cimedge.cloud_sync.reject import Reject

_ALG, _KID = 1, 4  # header labels (RFC 9052 §3.1)
_EDDSA = -8
_KID_LEN, _SIG_LEN = 8, 64
AAD_KINDS = frozenset({"batch", "event", "ack"})  # what a v2 AAD may bind (DESIGN.md 4a)


class Sign1(msgspec.Struct, frozen=True):
    """A structurally valid COSE_Sign1 whose signature is not yet checked."""

    protected: bytes  # the header bstr exactly as received: the signature covers these bytes
    kid: bytes
    payload: bytes
    signature: bytes


def kid_for(public_key_raw: bytes) -> bytes:
    """The key id: the first 8 bytes of SHA-256 over the raw 32-byte public key."""
    return hashlib.sha256(public_key_raw).digest()[:_KID_LEN]


def protected_header(kid: bytes) -> bytes:
    """The protected header bstr contents: {1: -8, 4: kid}, deterministically encoded."""
    return dumps_det({_ALG: _EDDSA, _KID: kid})


def aad(kind: str, dev: str, contract: int = 2) -> bytes:
    """The external AAD of a contract-2 message: deterministic CBOR ["cim", 2, kind, dev].

    Contract 1 has none (b""). ``kind`` is "batch", "event" or "ack"; ``dev`` is the device
    id as it appears in the topic. Raises ValueError on anything else, so a typo cannot sign
    a message no receiver will accept.
    """
    if contract == 1:
        return b""
    if contract != 2 or kind not in AAD_KINDS or type(dev) is not str or not dev:  # noqa: PLR2004
        raise ValueError(f"no external AAD for contract {contract!r}, kind {kind!r}, "
                         f"dev {dev!r}")
    return dumps_det(["cim", 2, kind, dev])


def _to_be_signed(protected: bytes, payload: bytes, external_aad: bytes) -> bytes:
    # Sig_structure (RFC 9052 §4.4): ["Signature1", body_protected, external_aad, payload].
    return dumps_det(["Signature1", protected, external_aad, payload])


def sign1(payload: bytes, key: Ed25519PrivateKey, kid: bytes | None = None, *,
          external_aad: bytes = b"") -> bytes:
    """Sign payload; returns the tagged COSE_Sign1 [protected, {}, payload, signature].

    ``external_aad`` is signed but not sent (v1: empty; v2: ``aad(kind, dev)``).
    """
    if kid is None:
        kid = kid_for(key.public_key().public_bytes_raw())
    protected = protected_header(kid)
    signature = key.sign(_to_be_signed(protected, payload, bytes(external_aad)))
    return dumps_det(cbor2.CBORTag(18, [protected, {}, payload, signature]))


def parse_sign1(data: bytes, *, max_size: int = 1 << 20) -> Sign1:
    """Check the message's structure exactly; raise Reject on any deviation."""
    # Depth 2 holds tag 18 -> array -> unprotected map; deeper header values are refused.
    top = loads_untrusted(data, max_size=max_size, max_depth=2, allow_tag18_top=True)
    if not isinstance(top, cbor2.CBORTag):
        _bad("not tagged 18 (COSE_Sign1)")
    msg = top.value
    if type(msg) is not list or len(msg) != 4:
        _bad("COSE_Sign1 must be an array of 4")
    protected, unprotected, payload, signature = msg
    if type(protected) is not bytes:
        _bad("protected header is not a bstr")
    kid = _protected_kid(protected)
    if type(unprotected) is not dict:
        _bad("unprotected header is not a map")
    if _ALG in unprotected or _KID in unprotected:
        _bad("alg or kid repeated in the unprotected header")
    if type(payload) is not bytes:
        _bad("payload is not a bstr (detached payloads are not used)")
    if type(signature) is not bytes or len(signature) != _SIG_LEN:
        _bad(f"signature is not a bstr of {_SIG_LEN} bytes")
    return Sign1(protected=protected, kid=kid, payload=payload, signature=signature)


def _protected_kid(protected: bytes) -> bytes:
    try:
        header = loads_untrusted(protected, max_size=64, max_depth=1)
    except Reject as e:
        _bad(f"protected header: {e}")
    if type(header) is not dict or set(header) != {_ALG, _KID}:
        _bad("protected header must hold exactly alg and kid")
    if type(header[_ALG]) is not int or header[_ALG] != _EDDSA:
        _bad(f"alg {header[_ALG]!r} is not EdDSA (-8)")
    kid = header[_KID]
    if type(kid) is not bytes or len(kid) != _KID_LEN:
        _bad(f"kid is not a bstr of {_KID_LEN} bytes")
    return kid


def _bad(detail: str) -> NoReturn:
    raise Reject("malformed_cose", detail)


def verify1(msg: Sign1, public_key_raw: bytes, *, external_aad: bytes = b"") -> bool:
    """True when msg's signature is valid under the raw 32-byte Ed25519 public key.

    ``external_aad`` must be the one the signer used (v2: ``aad(kind, dev)`` rebuilt from
    the topic); any other gives False. A public key that is not 32 bytes raises ValueError:
    that is a registry fault, not a property of the message.
    """
    key = Ed25519PublicKey.from_public_bytes(public_key_raw)
    try:
        key.verify(msg.signature, _to_be_signed(msg.protected, msg.payload, bytes(external_aad)))
    except InvalidSignature:
        return False
    return True
