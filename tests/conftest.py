"""Shared fixtures: a private Mosquitto per test on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cimedge.tools.broker import Mosquitto, mosquitto_binary


@pytest.fixture
def broker(tmp_path) -> Iterator[Mosquitto]:
    """A real mosquitto process on 127.0.0.1:<free port>, stopped after the test."""
    if mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed (.ci/run installs it with apt-get)")
    m = Mosquitto(workdir=tmp_path / "mosquitto")
    (tmp_path / "mosquitto").mkdir()
    m.start()
    try:
        yield m
    finally:
        m.close()
