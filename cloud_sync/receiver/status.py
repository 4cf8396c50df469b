"""Gateway status messages (`cim/v1/{dev}/status`): decoded with limits, known fields checked.

Today a gateway publishes a retained CBOR map `{"online": true}` while connected and has the
broker publish its MQTT will `{"online": false}` when the link breaks (cloud_sync/transport.py).
A richer status (issue #18: versions, buffer depth, oldest unacked age, clock state, devices'
health, kid; signed like a batch) adds fields to the same map: the fields named in FIELDS
are read and type-checked here, every other field is kept as it came (`extra`), and the
message's bytes are kept too, so a later version can read more without a redesign.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from cimedge.cloud_sync.cbor_limits import loads_untrusted
from cimedge.cloud_sync.reject import Reject

MAX_STATUS_BYTES = 16 * 1024  # a status with a few hundred devices' health fits in 8 KiB
MAX_DEPTH = 3  # map -> devices map -> value
MAX_TEXT = 64
MAX_DEVICES = 512
MAX_EXTRA_JSON = 4096  # unknown fields kept for display; the raw bytes keep everything

# Field -> what it must be. README "Gateway status" documents each one.
FIELDS = ("online", "ts", "sw", "config", "contract", "backlog", "oldest_unacked_s", "clock",
          "devices", "kid")


@dataclass(frozen=True)
class GatewayStatus:
    """One decoded status message; None where the gateway did not say."""

    dev: str
    raw: bytes
    online: bool | None = None
    ts: float | None = None  # the gateway's own clock when it sent this
    sw: str | None = None  # software version
    config: str | None = None  # config version (text: a number or a digest)
    contract: int | None = None  # batch contract it sends (1 or 2)
    backlog: int | None = None  # readings buffered and not yet acked
    oldest_unacked_s: float | None = None  # age of the oldest of them, seconds
    clock: str | None = None  # "ok", "invalid", "stepped", ... as the gateway names it
    devices: dict[str, str] | None = None  # field device -> health state
    kid: bytes | None = None  # the key the gateway signs with
    extra: dict[str, Any] = field(default_factory=dict)  # fields this receiver does not read
    signed: bool = False  # True once a signed status (#18) has been verified


def _bad(name: str, why: str) -> Reject:
    return Reject("bad_field", f"status {name}: {why}")


def _text(name: str, v: object) -> str:
    if not isinstance(v, str) or not v or len(v) > MAX_TEXT or not v.isprintable():
        raise _bad(name, f"must be printable text of 1 to {MAX_TEXT} characters")
    return v


def _uint(name: str, v: object) -> int:
    if type(v) is not int or not 0 <= v < 1 << 63:
        raise _bad(name, "must be an unsigned integer below 2^63")
    return v


def _seconds(name: str, v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
        raise _bad(name, "must be a finite number of seconds, 0 or more")
    return float(v)


def _devices(v: object) -> dict[str, str]:
    if not isinstance(v, dict) or len(v) > MAX_DEVICES:
        raise _bad("devices", f"must be a map of at most {MAX_DEVICES} device names to states")
    return {_text("devices key", k): _text("devices value", s) for k, s in v.items()}


def _jsonable(v: object) -> object:
    """An unknown field's value in a form JSON can hold (byte strings as hex)."""
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def decode_status(dev: str, data: bytes) -> GatewayStatus:
    """Decode one status message or raise Reject (too_large, malformed_cbor, too_deep,
    malformed_payload, bad_field); nothing is kept of a refused one."""
    obj = loads_untrusted(data, max_size=MAX_STATUS_BYTES, max_depth=MAX_DEPTH)
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise Reject("malformed_payload", "a status must be a CBOR map with text keys")
    known: dict[str, Any] = {}
    if "online" in obj:
        if not isinstance(obj["online"], bool):
            raise _bad("online", "must be true or false")
        known["online"] = obj["online"]
    checks = {"ts": _seconds, "sw": _text, "config": _text, "contract": _uint,
              "backlog": _uint, "oldest_unacked_s": _seconds, "clock": _text}
    for name, check in checks.items():
        if name in obj:
            known[name] = check(name, obj[name])
    if "devices" in obj:
        known["devices"] = _devices(obj["devices"])
    if "kid" in obj:
        if not isinstance(obj["kid"], bytes) or len(obj["kid"]) != 8:  # noqa: PLR2004
            raise _bad("kid", "must be the 8-byte kid")
        known["kid"] = obj["kid"]
    extra = {k: _jsonable(v) for k, v in obj.items() if k not in FIELDS}
    return GatewayStatus(dev, bytes(data), extra=extra, **known)
