"""Ed25519 verification in plain MicroPython, only to measure what it would cost on a node.

Not used by the firmware (which verifies LMS signatures, loader/lms.py). RFC 8032 section
5.1.7 on extended coordinates with MicroPython's big integers. MicroPython's hashlib has no
SHA-512 on the WebAssembly, ESP32 or RP2040 builds, so ``verify`` takes the SHA-512 of
R || A || M from the caller: the figure is a lower bound (a pure-Python SHA-512 comes on top).
"""

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493


def _inv(x):
    return pow(x, P - 2, P)


D = -121665 * _inv(121666) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)


def _x(y, sign):
    xx = (y * y - 1) * _inv(D * y * y + 1) % P
    x = pow(xx, (P + 3) // 8, P)
    if (x * x - xx) % P:
        x = x * SQRT_M1 % P
    if (x * x - xx) % P:
        raise ValueError("not a point")
    return P - x if x & 1 != sign else x


def _add(a, b):
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    e = (y1 - x1) * (y2 - x2) % P
    f = (y1 + x1) * (y2 + x2) % P
    g = 2 * D * t1 * t2 % P
    h = 2 * z1 * z2 % P
    e, f, g, h = f - e, h - g, h + g, f + e
    return e * f % P, g * h % P, f * g % P, e * h % P


def _mul(s, pt):
    q = (0, 1, 1, 0)
    while s:
        if s & 1:
            q = _add(q, pt)
        pt = _add(pt, pt)
        s >>= 1
    return q


def _point(b):
    y = int.from_bytes(b, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    x = _x(y, sign)
    return x, y, 1, x * y % P


def _encode(pt):
    x, y, z, _ = pt
    zi = _inv(z)
    x, y = x * zi % P, y * zi % P
    return (y | (x & 1) << 255).to_bytes(32, "little")


B = _point((4 * _inv(5) % P).to_bytes(32, "little"))


def verify(pub, sig, h512):
    """True if ``sig`` is valid for ``pub`` given ``h512`` = SHA-512(R || pub || message)."""
    s = int.from_bytes(sig[32:], "little")
    if s >= L:
        return False
    h = int.from_bytes(h512, "little") % L
    return _encode(_mul(s, B)) == _encode(_add(_point(sig[:32]), _mul(h, _point(pub))))
