"""The registry in PostgreSQL: the same operations, and readers that hear every change."""

from __future__ import annotations

import pytest
from rxkit import Device, new_device

from cimedge.cloud_sync.receiver.registry import EnrollmentError, RegistryError, open_registry


def test_add_lookup_rotate_revoke_list(pg_url: str, device: Device) -> None:
    reg = open_registry(pg_url)
    try:
        assert reg.add_enrollment(device.enrollment()).kid == device.kid
        reg.add_enrollment(device.enrollment())  # again: nothing changes
        info = reg.lookup(device.kid)
        assert info is not None
        assert (info.dev, info.public_key, info.status) == (device.dev, device.public_key,
                                                           "active")
        assert reg.lookup(b"\0" * 8) is None
        assert reg.has_device(device.dev)
        assert not reg.has_device("ps-9999")
        new = Device(device.dev, new_device().key)
        assert reg.rotate(new.enrollment(), after_seq=7) == [device.kid.hex()]
        assert [(k.kid, k.status, k.retired_after_seq) for k in reg.list()] == sorted(
            [(device.kid.hex(), "retired", 7), (new.kid.hex(), "active", None)])
        assert reg.revoke(device.dev) == 2
        assert reg.revoke(device.dev) == 0
        with pytest.raises(RegistryError, match="no enrolled key or device 'ps-9999'"):
            reg.revoke("ps-9999")
        with pytest.raises(EnrollmentError, match="already enrolled"):
            reg.add_enrollment(device.enrollment() | {"device_id": "ps-0002"})
    finally:
        reg.close()


def test_a_readers_cache_drops_on_every_change(pg_url: str, device: Device) -> None:
    writer = open_registry(pg_url)
    writer.add_enrollment(device.enrollment())
    reader = open_registry(pg_url, readonly=True)
    try:
        assert reader.lookup(device.kid).status == "active"  # now cached
        assert reader.lookup(device.kid).status == "active"
        writer.revoke(device.kid)
        assert reader.wait_changed(5)  # the NOTIFY arrives just after the commit
        assert reader.lookup(device.kid).status == "revoked"
        later = new_device("ps-0002")
        assert reader.lookup(later.kid) is None  # cached as unknown...
        assert not reader.has_device(later.dev)
        writer.add_enrollment(later.enrollment())
        assert reader.wait_changed(5)
        assert reader.lookup(later.kid) is not None  # ...until it is enrolled
        assert reader.has_device(later.dev)
        with pytest.raises(RegistryError, match="read-only"):
            reader.revoke(later.dev)
    finally:
        reader.close()
        writer.close()


def test_a_reader_that_lost_its_listener_asks_the_database(pg_url: str,
                                                           device: Device) -> None:
    writer = open_registry(pg_url)
    writer.add_enrollment(device.enrollment())
    reader = open_registry(pg_url, readonly=True)
    try:
        assert reader.lookup(device.kid).status == "active"
        listener_pid = reader._listen.info.backend_pid  # noqa: SLF001
        writer._conn.execute("SELECT pg_terminate_backend(%s)", (listener_pid,))  # noqa: SLF001
        assert reader.wait_changed(5)  # a lost listener counts as a change
        writer.revoke(device.kid)  # its NOTIFY had no one to go to
        assert reader.lookup(device.kid).status == "revoked"  # asked the database
    finally:
        reader.close()
        writer.close()


def test_a_database_without_a_registry(pg_url: str) -> None:
    with pytest.raises(RegistryError, match="no registry there"):
        open_registry(pg_url, readonly=True)
