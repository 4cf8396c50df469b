"""Registry: enrollment records checked field by field, lookups, revocation."""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path

import pytest
from rxkit import Device, new_device

from cimedge.cloud_sync.receiver.registry import EnrollmentError, Registry, RegistryError


def test_lookup_returns_the_enrolled_key(registry: Registry, device: Device) -> None:
    info = registry.lookup(device.kid)
    assert info is not None
    assert (info.dev, info.public_key, info.status) == (device.dev, device.public_key, "active")
    assert info.retired_after_seq is None
    assert info.not_after is None
    assert registry.lookup(b"\0" * 8) is None
    assert registry.has_device(device.dev)
    assert not registry.has_device("ps-9999")


def test_re_adding_the_same_record_changes_nothing(registry: Registry, device: Device) -> None:
    before = registry.list()
    registry.add_enrollment(device.enrollment())
    assert registry.list() == before
    assert len(before) == 1
    assert before[0].kid == device.kid.hex()
    assert before[0].location == "Pump station 1"


def test_second_key_for_a_device_and_not_after(registry: Registry, device: Device) -> None:
    other = new_device(device.dev)
    rec = other.enrollment() | {"not_after": "2030-01-01T00:00:00+00:00"}
    registry.add_enrollment(rec)
    info = registry.lookup(other.kid)
    assert info is not None
    assert info.not_after == 1893456000.0
    assert len(registry.list()) == 2


@pytest.mark.parametrize(("change", "field"), [
    ({"v": 2}, "v"),
    ({"v": True}, "v"),
    ({"device_id": "PS_01"}, "device_id"),
    ({"device_id": "ab"}, "device_id"),
    ({"site_type": ""}, "site_type"),
    ({"kid": "00" * 8}, "kid"),
    ({"kid": "xyz"}, "kid"),
    ({"public_key": "not base64!"}, "public_key"),
    ({"public_key": base64.b64encode(b"\1" * 31).decode()}, "public_key"),
    ({"created": "yesterday"}, "created"),
    ({"created": "2025-03-01T08:00:00"}, "created"),
    ({"not_after": 12}, "not_after"),
    ({"location": 7}, "location"),
    ({"secret": "x"}, "secret"),
])
def test_bad_field_is_named(tmp_path: Path, device: Device, change: dict[str, object],
                            field: str) -> None:
    reg = Registry(tmp_path / "r.db")
    with pytest.raises(EnrollmentError) as e:
        reg.add_enrollment(device.enrollment() | change)
    assert e.value.field == field
    assert field in str(e.value)
    assert reg.list() == []


def test_missing_field_is_named(tmp_path: Path, device: Device) -> None:
    rec = device.enrollment()
    del rec["public_key"]
    with pytest.raises(EnrollmentError, match="public_key: is missing"):
        Registry(tmp_path / "r.db").add_enrollment(rec)


def test_kid_enrolled_for_another_device_is_refused(registry: Registry, device: Device) -> None:
    with pytest.raises(EnrollmentError, match="already enrolled"):
        registry.add_enrollment(device.enrollment() | {"device_id": "ps-0002"})


def test_load_enrollment_file(tmp_path: Path, device: Device) -> None:
    path = tmp_path / "enrollment.json"
    path.write_text(json.dumps(device.enrollment()))
    reg = Registry(sqlite3.connect(":memory:", isolation_level=None))
    assert reg.load_enrollment_file(path).kid == device.kid
    assert reg.lookup(device.kid) is not None
    path.write_text("{not json")
    with pytest.raises(EnrollmentError, match=r"enrollment\.json: not valid JSON"):
        reg.load_enrollment_file(path)
    with pytest.raises(EnrollmentError, match="cannot read"):
        reg.load_enrollment_file(tmp_path / "missing.json")


def test_revoke_by_kid_bytes_hex_and_device(registry: Registry, device: Device) -> None:
    second = new_device(device.dev)
    third = new_device(device.dev)
    registry.add_enrollment(second.enrollment())
    registry.add_enrollment(third.enrollment())
    assert registry.revoke(device.kid) == 1
    assert registry.revoke(second.kid.hex()) == 1
    assert registry.revoke(device.dev) == 1  # only third was still active
    assert {r.status for r in registry.list()} == {"revoked"}
    info = registry.lookup(device.kid)
    assert info is not None
    assert info.status == "revoked"
    assert all(r.revoked_at is not None for r in registry.list())
    registry.add_enrollment(device.enrollment())  # re-enrolling does not un-revoke
    assert registry.lookup(device.kid).status == "revoked"  # type: ignore[union-attr]
    with pytest.raises(RegistryError):
        registry.revoke("ps-9999")


def test_readonly_registry_refuses_what_is_not_one(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="no registry there"):
        Registry(tmp_path / "none.sqlite", readonly=True)
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)")
    with pytest.raises(RegistryError, match="not a registry"):
        Registry(other, readonly=True)
    (tmp_path / "junk.sqlite").write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(RegistryError, match="not a registry"):
        Registry(tmp_path / "junk.sqlite", readonly=True)


def test_rotate_retires_only_the_devices_active_keys(registry: Registry,
                                                     device: Device) -> None:
    other = new_device("ps-0002")
    registry.add_enrollment(other.enrollment())
    new = Device(device.dev, new_device().key)
    assert registry.rotate(new.enrollment(), after_seq=9) == [device.kid.hex()]
    assert registry.lookup(other.kid).status == "active"  # type: ignore[union-attr]
    assert registry.lookup(new.kid).status == "active"  # type: ignore[union-attr]
    newer = Device(device.dev, new_device().key)
    assert registry.rotate(newer.enrollment(), after_seq=20) == [new.kid.hex()]
    old = registry.lookup(device.kid)
    assert (old.status, old.retired_after_seq) == ("retired", 9)  # type: ignore[union-attr]
