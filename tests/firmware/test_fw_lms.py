"""LMS signatures: the node's verifier against RFC 8554's test vectors, CPython and MicroPython."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

VECTORS = json.loads((Path(__file__).parent / "rfc8554_vectors.json").read_text())["cases"]


def levels(case: dict[str, str]) -> list[tuple[bytes, bytes, bytes]]:
    """The two (public key, message, LMS signature) checks of a two-level HSS test case."""
    pub = bytes.fromhex(case["hss_public_key"])
    sig = bytes.fromhex(case["hss_signature"])
    assert int.from_bytes(pub[:4], "big") == 2 and int.from_bytes(sig[:4], "big") == 1
    root = pub[4:]
    h = {5: 5, 6: 10}[int.from_bytes(root[:4], "big")]
    p = {3: 67, 4: 34}[int.from_bytes(root[4:8], "big")]
    top = 12 + 32 * (1 + p + h)
    child = sig[4 + top:4 + top + 56]
    return [(root, child, sig[4:4 + top]), (child, case["message"].encode(), sig[4 + top + 56:])]


@pytest.mark.parametrize("case", VECTORS, ids=lambda c: c["name"])
def test_rfc8554_vectors_on_cpython(fw: Any, case: dict[str, str]) -> None:  # noqa: ANN401
    for pub, msg, sig in levels(case):
        assert fw.lms.verify(pub, msg, sig)
        assert not fw.lms.verify(pub, msg + b".", sig)
        bad = bytearray(sig)
        bad[100] ^= 0x80
        assert not fw.lms.verify(pub, msg, bytes(bad))


def test_rfc8554_vectors_under_micropython(sim) -> None:  # noqa: ANN001
    node = sim()
    checks = [(p.hex(), m.hex(), s.hex()) for case in VECTORS for p, m, s in levels(case)]
    code = ("import lms, json\nfrom binascii import unhexlify as u\n"
            f"_r = json.dumps([lms.verify(u(p), u(m), u(s)) for p, m, s in {checks!r}]"
            " + [lms.verify(u(p), u(m) + b'.', u(s)) for p, m, s in " + repr(checks) + "])")
    assert json.loads(node.exec(code)) == [True] * 4 + [False] * 4


def test_sign_and_verify_round_trip(fw: Any, tmp_path: Path) -> None:  # noqa: ANN401
    key = fw.LmsKey.generate(tmp_path / "k", height=5, w=4)
    pub = key.public()
    sig = key.sign(b"firmware manifest")
    assert len(sig) == 12 + 32 * (1 + 67 + 5)
    assert fw.lms.verify(pub, b"firmware manifest", sig)
    assert not fw.lms.verify(pub, b"firmware manifesT", sig)
    other = fw.LmsKey.generate(tmp_path / "k2", height=5, w=4)
    assert not fw.lms.verify(other.public(), b"firmware manifest", sig)


def test_the_key_file_is_private_and_never_reuses_a_leaf(fw: Any, tmp_path: Path) -> None:  # noqa: ANN401
    path = tmp_path / "city.key"
    key = fw.LmsKey.generate(path, height=5, w=4)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    first = key.sign(b"a")
    again = fw.LmsKey.load(path)  # another process, later: the next leaf, not the same one
    second = again.sign(b"a")
    assert first[:4] == bytes(4) and second[:4] == (1).to_bytes(4, "big")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    data = json.loads(path.read_text())
    path.write_text(json.dumps(data | {"next_q": 31}))
    last = fw.LmsKey.load(path)
    last.sign(b"b")
    with pytest.raises(fw.KeyExhausted, match="all 32 one-time keys"):
        last.sign(b"c")
    with pytest.raises(FileExistsError):
        fw.LmsKey.generate(path)
