"""Signed application updates: check a staged image, install it in the idle slot, switch to it.

An image is ``b"CIMFW\\x01"``, the manifest's length (u16, big-endian), the manifest (JSON),
the signature's length (u16), an LMS signature (``lms.py``) of everything before it, then the
files' bytes in manifest order. The manifest::

    {"v": 1, "product": "cimedge-node", "version": [1, 1, 0],
     "files": [["app.py", 1234, "<sha256 hex>"], ...]}

Only a manifest signed by the city's firmware key (``fwkey.pub``) with a version above both
the running one and the anti-rollback floor is installed. The idle slot's old manifest goes
first and the new one comes last, after every file was written and read back against its
hash; only then does the ``slot`` file switch, by rename. A power cut at any point before
that leaves the old application running and ``update.bin`` staged for the next boot.
"""

import json
import os
from binascii import hexlify, unhexlify
from hashlib import sha256

import fwboot
import hw
import lms

MAGIC = b"CIMFW\x01"
PRODUCT = "cimedge-node"
_RESERVED = ("main.py", "boot.py", "hw.py", "hw_sim.py", "fwboot.py", "fwupdate.py", "lms.py")
_CHUNK = 512


class Refused(Exception):
    """The image is not acceptable; the message says why."""


def _u16(f):
    b = f.read(2)
    if len(b) != 2:
        raise Refused("truncated image")
    return b[0] << 8 | b[1]


def fmt(v):
    """A version tuple as text."""
    return "%d.%d.%d" % v


def floor():
    """The anti-rollback floor: the highest version ever confirmed on this node."""
    try:
        return tuple(int(x) for x in fwboot.read_text("fwfloor").split("."))
    except (AttributeError, ValueError):
        return (0, 0, 0)


def _manifest(f):
    if f.read(len(MAGIC)) != MAGIC:
        raise Refused("not a CIM Edge firmware image")
    size = _u16(f)
    if size > 4096:
        raise Refused("manifest too large")
    body = f.read(size)
    signed = MAGIC + bytes((size >> 8, size & 255)) + body
    sig_len = _u16(f)
    if sig_len == 0:
        raise Refused("unsigned image")
    if sig_len > 10000:
        raise Refused("signature too large")
    sig = f.read(sig_len)
    key = fwboot.read_text("fwkey.pub")
    if key is None:
        raise Refused("no firmware key on this node")
    try:
        pub = unhexlify(key.strip())
    except ValueError:
        raise Refused("unreadable firmware key") from None
    if not lms.verify(pub, signed, sig):
        raise Refused("bad signature")
    try:
        return _checked(json.loads(body.decode()))
    except (ValueError, TypeError, KeyError, UnicodeError):
        raise Refused("malformed manifest") from None


def _checked(m):
    if m["v"] != 1 or m["product"] != PRODUCT:
        raise Refused("image is for another product")
    v = m["version"]
    if len(v) != 3 or not all(type(x) is int and 0 <= x <= 255 for x in v):
        raise Refused("malformed version")
    names = []
    for name, size, digest in m["files"]:
        ok = name.endswith(".py") or name.endswith(".mpy")
        if not ok or "/" in name or name in _RESERVED or name in names or size < 0:
            raise Refused("bad file name " + name)
        names.append(name)
        if len(digest) != 64:
            raise Refused("bad hash for " + name)
    if "app.py" not in names and "app.mpy" not in names:
        raise Refused("image has no app module")
    return m


def _clear(slot):
    d = hw.path(slot)
    try:
        names = os.listdir(d)
    except OSError:
        os.mkdir(d)
        return
    if "manifest.json" in names:  # first: from here on the slot is not a bootable app
        os.remove(d + "/manifest.json")
    for name in names:
        if name != "manifest.json":
            os.remove(d + "/" + name)


def _hex(h):
    return hexlify(h.digest()).decode()


def _copy(src, dst, size, buf):
    h = sha256()
    with open(dst, "wb") as out:
        while size > 0:
            n = src.readinto(buf, min(size, _CHUNK))
            if not n:
                raise Refused("truncated image")
            out.write(buf, n)
            h.update(memoryview(buf)[:n])
            size -= n
    return _hex(h)


def _digest(path, buf):
    h = sha256()
    with open(path, "rb") as f:
        while True:
            n = f.readinto(buf)
            if not n:
                return _hex(h)
            h.update(memoryview(buf)[:n])


def install(path):
    """Install the image at ``path`` in the idle slot and put it on trial; the outcome as text."""
    with open(path, "rb") as f:
        m = _manifest(f)
        slot, fallback, _ = fwboot.state()
        good = fallback or slot  # the last confirmed slot: never overwritten
        current = max(fwboot.version(good) or (0, 0, 0), floor())
        new = tuple(m["version"])
        if new <= current:
            raise Refused("version %s is not newer than %s" % (fmt(new), fmt(current)))
        target = "b" if good == "a" else "a"
        _clear(target)
        buf = bytearray(_CHUNK)
        d = hw.path(target) + "/"
        for name, size, digest in m["files"]:
            if _copy(f, d + name, size, buf) != digest:
                raise Refused(name + " does not match its hash")
    for name, _, digest in m["files"]:  # read back what flash holds
        if _digest(d + name, buf) != digest:
            raise Refused(name + " reads back wrong from flash")
    fwboot.write_atomic(target + "/manifest.json", json.dumps(m))
    fwboot.write_atomic("slot", "%s %s 0" % (target, good))
    return "installed %s in slot %s" % (fmt(new), target)


def apply_staged():
    """Install ``update.bin`` if it is acceptable, log the outcome, and remove it."""
    path = hw.path("update.bin")
    try:
        msg = install(path)
    except Refused as e:
        msg = "refused: " + e.args[0]
    except Exception as e:  # noqa: BLE001  # a broken image must not stop the node booting
        msg = "failed: " + repr(e)
    fwboot.log(msg)
    print("update:", msg)
    os.remove(path)
