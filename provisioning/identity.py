"""A device identity: an Ed25519 key in a 0600 file and its enrollment record (DESIGN.md §5)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cimedge.cloud_sync.cose import kid_for
from cimedge.edge.errors import CimEdgeError

DEVICE_ID = re.compile(r"[a-z0-9-]{3,64}")


def check_device_id(device_id: str) -> None:
    """Refuse an id that cannot appear in a topic (DESIGN.md section 4)."""
    if not DEVICE_ID.fullmatch(device_id):
        raise CimEdgeError(f"device id {device_id!r} must be 3-64 of a-z, 0-9 and -")


def write_key(path: Path, *, force: bool = False) -> Ed25519PrivateKey:
    """Create a new key from the OS's CSPRNG in a file only its owner can read."""
    if path.exists() and not force:
        raise CimEdgeError(f"{path} already holds a key; pass --force to replace it")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # umask or a pre-existing file must not widen it
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return key


def load_key(path: Path) -> Ed25519PrivateKey:
    """Read a device key, refusing one that others can read."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as e:
        raise CimEdgeError(f"cannot read the device key {path}: {e.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CimEdgeError(f"{path} is readable by others (mode {stat.S_IMODE(mode):o}); "
                           f"run: chmod 600 {path}")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except ValueError:
        raise CimEdgeError(f"{path} is not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CimEdgeError(f"{path} is not an Ed25519 key")
    return key


def enrollment(key: Ed25519PrivateKey, device_id: str, site_type: str,
               location: str = "", now: dt.datetime | None = None) -> dict[str, object]:
    """The enrollment record v1 for a key: everything the registry needs, no secret."""
    check_device_id(device_id)
    raw = key.public_key().public_bytes_raw()
    record: dict[str, object] = {
        "v": 1,
        "device_id": device_id,
        "site_type": site_type,
        "kid": kid_for(raw).hex(),
        "public_key": base64.b64encode(raw).decode(),
        "created": (now or dt.datetime.now(dt.UTC)).replace(microsecond=0).isoformat()
                   .replace("+00:00", "Z"),
    }
    if location:
        record["location"] = location
    return record


def write_enrollment(path: Path, record: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)


def ensure_identity(state_dir: Path, device_id: str, site_type: str,
                    location: str = "") -> tuple[Ed25519PrivateKey, Path]:
    """Load the device key in ``state_dir`` or create it with its enrollment record."""
    key_path, enroll_path = state_dir / "device.key", state_dir / "enrollment.json"
    key = load_key(key_path) if key_path.exists() else write_key(key_path)
    if not enroll_path.exists():
        write_enrollment(enroll_path, enrollment(key, device_id, site_type, location))
    return key, enroll_path
