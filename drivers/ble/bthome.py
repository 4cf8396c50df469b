"""BTHome v2 advertisements (https://bthome.io/format/): parse, and build for the replay tool; pure.

The service data of UUID 0xFCD2 is one device-information byte (bit 0 encrypted, bit 2
trigger-based, bits 5-7 the BTHome version, 2 here) then objects: an object id and a
little-endian value whose size the id fixes (text and raw carry a length byte). An
encrypted advertisement carries AES-CCM ciphertext of the objects, then a 4-byte counter
and a 4-byte MIC; the nonce is MAC (6 bytes) + UUID (D2 FC) + device-information byte +
counter, the key the device's 16-byte bind key.
"""

from __future__ import annotations

import struct

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from cimedge.edge.errors import BadFrame

UUID = "0000fcd2-0000-1000-8000-00805f9b34fb"
ENCRYPTED, TRIGGER, VERSION_SHIFT = 0x01, 0x04, 5


class Kind(msgspec.Struct, frozen=True):
    """One object id: its name, struct format (little-endian), factor and unit."""

    name: str
    # struct letters, "U" a 24-bit unsigned; "T" text and "R" raw (a length byte first), "C" a
    # command (opcode and up to 31 argument bytes, their count in the low 5 bits of a length
    # byte); "?" a binary sensor.
    fmt: str
    factor: float = 1.0
    unit: str = ""


def _k(name: str, fmt: str, factor: float = 1.0, unit: str = "") -> Kind:
    return Kind(name, fmt, factor, unit)


# Binary sensors: 0x0F-0x11, then 0x15-0x2D (0x12-0x14 are CO2, TVOC and moisture).
_BINARY = {
    0x0F: "generic_boolean", 0x10: "power_on", 0x11: "opening", 0x15: "battery_low",
    0x16: "battery_charging", 0x17: "carbon_monoxide", 0x18: "cold", 0x19: "connectivity",
    0x1A: "door", 0x1B: "garage_door", 0x1C: "gas_detected", 0x1D: "heat", 0x1E: "light",
    0x1F: "lock", 0x20: "moisture_detected", 0x21: "motion", 0x22: "moving",
    0x23: "occupancy", 0x24: "plug", 0x25: "presence", 0x26: "problem", 0x27: "running",
    0x28: "safety", 0x29: "smoke", 0x2A: "sound", 0x2B: "tamper", 0x2C: "vibration",
    0x2D: "window",
}  # fmt: skip

OBJECTS: dict[int, Kind] = {
    0x00: _k("packet_id", "B"),
    0x01: _k("battery", "B", 1, "%"),
    0x02: _k("temperature", "h", 0.01, "Cel"),
    0x03: _k("humidity", "H", 0.01, "%RH"),
    0x04: _k("pressure", "U", 0.01, "hPa"),
    0x05: _k("illuminance", "U", 0.01, "lx"),
    0x06: _k("mass_kg", "H", 0.01, "kg"),
    0x07: _k("mass_lb", "H", 0.01, "lb"),
    0x08: _k("dewpoint", "h", 0.01, "Cel"),
    0x09: _k("count", "B"),
    0x0A: _k("energy", "U", 0.001, "kWh"),
    0x0B: _k("power", "U", 0.01, "W"),
    0x0C: _k("voltage", "H", 0.001, "V"),
    0x0D: _k("pm25", "H", 1, "ug/m3"),
    0x0E: _k("pm10", "H", 1, "ug/m3"),
    **{oid: _k(name, "?") for oid, name in _BINARY.items()},
    0x2E: _k("humidity", "B", 1, "%RH"),
    0x2F: _k("moisture", "B", 1, "%"),
    0x12: _k("co2", "H", 1, "ppm"),
    0x13: _k("tvoc", "H", 1, "ug/m3"),
    0x14: _k("moisture", "H", 0.01, "%"),
    0x3A: _k("button", "B"),
    0x3B: _k("command", "C"),
    0x3C: _k("dimmer", "BB"),
    0x3D: _k("count", "H"),
    0x3E: _k("count", "I"),
    0x3F: _k("rotation", "h", 0.1, "deg"),
    0x40: _k("distance_mm", "H", 1, "mm"),
    0x41: _k("distance_m", "H", 0.1, "m"),
    0x42: _k("duration", "U", 0.001, "s"),
    0x43: _k("current", "H", 0.001, "A"),
    0x44: _k("speed", "H", 0.01, "m/s"),
    0x45: _k("temperature", "h", 0.1, "Cel"),
    0x46: _k("uv_index", "B", 0.1),
    0x47: _k("volume_l", "H", 0.1, "L"),
    0x48: _k("volume_ml", "H", 1, "mL"),
    0x49: _k("volume_flow_rate", "H", 0.001, "m3/h"),
    0x4A: _k("voltage", "H", 0.1, "V"),
    0x4B: _k("gas", "U", 0.001, "m3"),
    0x4C: _k("gas", "I", 0.001, "m3"),
    0x4D: _k("energy", "I", 0.001, "kWh"),
    0x4E: _k("volume", "I", 0.001, "L"),
    0x4F: _k("water", "I", 0.001, "L"),
    0x50: _k("timestamp", "I", 1, "s"),
    0x51: _k("acceleration", "H", 0.001, "m/s2"),
    0x52: _k("gyroscope", "H", 0.001, "deg/s"),
    0x53: _k("text", "T"),
    0x54: _k("raw", "R"),
    0x55: _k("volume_storage", "I", 0.001, "L"),
    0x56: _k("conductivity", "H", 1, "uS/cm"),
    0x57: _k("temperature", "b", 1, "Cel"),
    0x58: _k("temperature", "b", 0.35, "Cel"),
    0x59: _k("count", "b"),
    0x5A: _k("count", "h"),
    0x5B: _k("count", "i"),
    0x5C: _k("power", "i", 0.01, "W"),
    0x5D: _k("current", "h", 0.001, "A"),
    0x5E: _k("direction", "H", 0.01, "deg"),
    0x5F: _k("precipitation", "H", 0.1, "mm"),
    0x60: _k("channel", "B"),
    0x61: _k("rotational_speed", "H", 1, "rpm"),
    0x62: _k("speed", "i", 0.000001, "m/s"),
    0x63: _k("acceleration", "i", 0.000001, "m/s2"),
    0x64: _k("light_level", "B"),
    0x65: _k("settings_revision", "B"),
    0xF0: _k("device_type_id", "H"),
    0xF1: _k("firmware_version", "BBBB"),
    0xF2: _k("firmware_version", "BBB"),
}

Value = float | int | bool | str


class Measurement(msgspec.Struct, frozen=True):
    """One object of an advertisement."""

    object_id: int
    name: str
    value: Value
    unit: str = ""


class Advert(msgspec.Struct, frozen=True):
    """One parsed advertisement."""

    encrypted: bool
    trigger: bool
    measurements: tuple[Measurement, ...]
    counter: int | None = None  # the encryption counter
    unknown_id: int | None = None  # parsing stopped at this object id (a newer spec?)


def parse(data: bytes, mac: str = "", key: bytes | None = None) -> Advert:
    """The advertisement in service data ``data`` from ``mac`` ("A4:C1:38:..").

    Raises BadFrame for another BTHome version, a truncated object, an encrypted
    advertisement without a key, or one that does not decrypt (wrong key, tampered).
    """
    if not data:
        msg = "empty BTHome service data"
        raise BadFrame(msg)
    info = data[0]
    version = info >> VERSION_SHIFT
    if version != 2:  # noqa: PLR2004
        msg = f"BTHome version {version}, not 2"
        raise BadFrame(msg)
    counter = None
    body = data[1:]
    if info & ENCRYPTED:
        body, counter = _decrypt(data, mac, key)
    measurements, unknown = _objects(body)
    return Advert(bool(info & ENCRYPTED), bool(info & TRIGGER), measurements, counter, unknown)


def _decrypt(data: bytes, mac: str, key: bytes | None) -> tuple[bytes, int]:
    if key is None:
        msg = "encrypted BTHome advertisement, and no bind key configured"
        raise BadFrame(msg)
    if len(data) < 1 + 8:  # noqa: PLR2004  # info, counter, MIC
        msg = f"encrypted BTHome advertisement too short ({len(data)} bytes)"
        raise BadFrame(msg)
    ciphertext, counter, mic = data[1:-8], data[-8:-4], data[-4:]
    try:
        cipher = AESCCM(key, tag_length=4)
        body = cipher.decrypt(nonce(mac, data[0], counter), ciphertext + mic, None)
    except (InvalidTag, ValueError) as exc:
        msg = "BTHome advertisement does not decrypt (wrong bind key, or tampered)"
        raise BadFrame(msg) from exc
    return body, int.from_bytes(counter, "little")


def nonce(mac: str, info: int, counter: bytes) -> bytes:
    """The AES-CCM nonce: MAC, UUID 0xFCD2 little-endian, device-information byte, counter."""
    address = bytes.fromhex(mac.replace(":", "").replace("-", ""))
    return address + b"\xd2\xfc" + bytes((info,)) + counter


def _objects(body: bytes) -> tuple[tuple[Measurement, ...], int | None]:
    out: list[Measurement] = []
    at = 0
    while at < len(body):
        oid = body[at]
        kind = OBJECTS.get(oid)
        if kind is None:
            return tuple(out), oid
        value, at = _value(kind, body, at + 1)
        out.append(Measurement(oid, kind.name, value, kind.unit))
    return tuple(out), None


def _value(kind: Kind, body: bytes, at: int) -> tuple[Value, int]:
    if kind.fmt in ("T", "R", "C"):
        size = body[at] if at < len(body) else 0
        if kind.fmt == "C":
            size = 1 + (size & 0x1F)
        raw = body[at + 1 : at + 1 + size]
        if at >= len(body) or len(raw) < size:
            msg = f"BTHome {kind.name} object runs past the end"
            raise BadFrame(msg)
        text = raw.decode("utf-8", errors="replace") if kind.fmt == "T" else raw.hex()
        return text, at + 1 + size
    size = _size(kind.fmt)
    raw = body[at : at + size]
    if len(raw) < size:
        msg = f"BTHome {kind.name} object needs {size} bytes, has {len(raw)}"
        raise BadFrame(msg)
    if kind.fmt == "?":
        return bool(raw[0]), at + size
    if kind.fmt in ("BBBB", "BBB"):
        return ".".join(str(b) for b in raw[::-1]), at + size
    if kind.fmt == "BB":  # dimmer: event (1 left, 2 right) and steps
        return (-raw[1] if raw[0] == 1 else raw[1]), at + size
    n = int.from_bytes(raw, "little", signed=kind.fmt.islower())
    if kind.factor == 1:
        return n, at + size
    return round(n * kind.factor, 6), at + size


def _size(fmt: str) -> int:
    return 3 if fmt == "U" else 1 if fmt == "?" else struct.calcsize("<" + fmt)


def encode(objects: list[tuple[int, Value]], info: int = 2 << VERSION_SHIFT) -> bytes:
    """Service data for ``objects`` (id, value as parse gives it), unencrypted."""
    return bytes((info,)) + _encode_objects(objects)


def encrypt(objects: list[tuple[int, Value]], mac: str, key: bytes, counter: int) -> bytes:
    """Encrypted service data for ``objects`` from ``mac``, as a device with ``key`` sends it."""
    info = 2 << VERSION_SHIFT | ENCRYPTED
    count = counter.to_bytes(4, "little")
    cipher = AESCCM(key, tag_length=4)
    sealed = cipher.encrypt(nonce(mac, info, count), _encode_objects(objects), None)
    return bytes((info,)) + sealed[:-4] + count + sealed[-4:]


def _encode_objects(objects: list[tuple[int, Value]]) -> bytes:
    out = bytearray()
    for oid, value in objects:
        kind = OBJECTS[oid]
        out.append(oid)
        if kind.fmt in ("T", "R", "C"):
            raw = str(value).encode() if kind.fmt == "T" else bytes.fromhex(str(value))
            out += bytes((len(raw) - 1 if kind.fmt == "C" else len(raw),)) + raw
        elif kind.fmt in ("BBBB", "BBB"):
            out += bytes(int(p) for p in str(value).split("."))[::-1]
        elif kind.fmt == "BB":
            steps = int(value)
            out += bytes((1 if steps < 0 else 2 if steps else 0, abs(steps)))
        else:
            n = int(value) if kind.fmt == "?" else round(float(value) / kind.factor)
            out += n.to_bytes(_size(kind.fmt), "little", signed=kind.fmt.islower())
    return bytes(out)
