"""Wire-codec fixtures: one Ed25519 device key, fixed so failures reproduce."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

# RFC 8032 §7.1 test 1 secret key: a known key keeps golden bytes stable across runs.
RFC8032_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(RFC8032_SECRET)


@pytest.fixture
def pub(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()
