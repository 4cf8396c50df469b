"""LMS hash-based signature verification (RFC 8554, NIST SP 800-208), SHA-256 with m = n = 32.

Only SHA-256 is needed, which every MicroPython port has (in hardware on ESP32). Parameter
sets: LMS heights 5-25, LM-OTS Winternitz w = 1, 2, 4 or 8. Runs on CPython as well, so the
release tools check their signatures with this very code.
"""

from hashlib import sha256

# LMS typecode -> tree height h; LM-OTS typecode -> (w, p, ls). RFC 8554 tables 1 and 2.
_LMS = {5: 5, 6: 10, 7: 15, 8: 20, 9: 25}
_OTS = {1: (1, 265, 7), 2: (2, 133, 6), 3: (4, 67, 4), 4: (8, 34, 0)}
D_PBLC = b"\x80\x80"
D_MESG = b"\x81\x81"
D_LEAF = b"\x82\x82"
D_INTR = b"\x83\x83"


def u32(v):
    """``v`` as 4 bytes, big-endian."""
    return bytes(((v >> 24) & 255, (v >> 16) & 255, (v >> 8) & 255, v & 255))


def _get32(b, i):
    return b[i] << 24 | b[i + 1] << 16 | b[i + 2] << 8 | b[i + 3]


def coef(s, i, w):
    """The ``i``-th ``w``-bit digit of ``s``."""
    return (s[i * w // 8] >> (8 - (w * (i % (8 // w)) + w))) & ((1 << w) - 1)


def checksum(q, w, ls):
    """The LM-OTS checksum of message digest ``q``, as 2 bytes."""
    s = 0
    for i in range(256 // w):
        s += (1 << w) - 1 - coef(q, i, w)
    s <<= ls
    return bytes(((s >> 8) & 255, s & 255))


def chain(ident, q, i, tmp, start, stop):
    """Hash ``tmp`` along chain ``i`` of leaf ``q`` from step ``start`` up to ``stop``."""
    buf = bytearray(ident + u32(q) + bytes((i >> 8, i & 255, 0)) + tmp)
    for j in range(start, stop):
        buf[22] = j
        buf[23:55] = sha256(buf).digest()
    return bytes(buf[23:55])


def params(pub):
    """(h, w, p, ls) for public key ``pub``, or None for one this module cannot check."""
    if len(pub) != 56:
        return None
    h = _LMS.get(_get32(pub, 0))
    ots = _OTS.get(_get32(pub, 4))
    return None if h is None or ots is None else (h,) + ots


def leaf_key(ident, q, c, y, msg, w, p, ls):
    """The LM-OTS public key a signature (``c``, ``y``) of ``msg`` implies (RFC 8554 alg. 4b)."""
    qb = u32(q)
    digest = sha256(ident + qb + D_MESG + c + msg).digest()
    digits = digest + checksum(digest, w, ls)
    k = sha256(ident + qb + D_PBLC)
    top = (1 << w) - 1
    for i in range(p):
        k.update(chain(ident, q, i, bytes(y[32 * i : 32 * i + 32]), coef(digits, i, w), top))
    return k.digest()


def verify(pub, msg, sig):
    """True if ``sig`` is a valid LMS signature of ``msg`` under public key ``pub``."""
    got = params(pub)
    if got is None:
        return False
    h, w, p, ls = got
    if len(sig) != 12 + 32 * (1 + p + h):
        return False
    q = _get32(sig, 0)
    if _get32(sig, 4) != _get32(pub, 4) or q >= 1 << h:
        return False
    end = 40 + 32 * p
    if _get32(sig, end) != _get32(pub, 0):
        return False
    ident = bytes(pub[8:24])
    kc = leaf_key(ident, q, bytes(sig[8:40]), memoryview(sig)[40:end], msg, w, p, ls)
    node = (1 << h) + q
    tmp = sha256(ident + u32(node) + D_LEAF + kc).digest()
    path = end + 4
    for i in range(h):
        sib = bytes(sig[path + 32 * i : path + 32 * i + 32])
        pair = sib + tmp if node & 1 else tmp + sib
        tmp = sha256(ident + u32(node >> 1) + D_INTR + pair).digest()
        node >>= 1
    return tmp == bytes(pub[24:56])
