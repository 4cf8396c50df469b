"""Receiver fixtures: an enrolled device, its registry file, and a PostgreSQL database per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from rxkit import Device, new_device

from cimedge.cloud_sync.receiver.registry import Registry

# The server the PostgreSQL tests use; each test creates and drops its own database there.
PG_ADMIN_URL = os.environ.get("CIM_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def device() -> Device:
    return new_device()


@pytest.fixture
def registry(tmp_path: Path, device: Device) -> Iterator[Registry]:
    """A registry file holding `device`'s enrollment."""
    reg = Registry(tmp_path / "registry.db")
    reg.add_enrollment(device.enrollment())
    yield reg
    reg.close()


def _admin():  # noqa: ANN202 - psycopg is imported lazily
    import psycopg

    try:
        return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as e:
        first = (str(e).strip().splitlines() or ["?"])[0]
        pytest.skip(f"no PostgreSQL reachable at {urlsplit(PG_ADMIN_URL).netloc} ({first}); "
                    "set CIM_TEST_PG=postgresql://USER@HOST:PORT/postgres to use another")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped after the test."""
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install -e .[test])")
    admin = _admin()
    name = f"cim_test_{uuid.uuid4().hex[:16]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        u = urlsplit(PG_ADMIN_URL)
        try:
            yield urlunsplit((u.scheme, u.netloc, f"/{name}", "", ""))
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A --db value for each store implementation: a SQLite file, a PostgreSQL URL."""
    if request.param == "sqlite":
        return str(tmp_path / "rx.db")
    return str(request.getfixturevalue("pg_url"))
