"""One MQTT 5 CONNECT by hand, to tell a technician exactly which step to the broker fails.

An MQTT client library folds a refused TCP connect, a server certificate that does not
verify, a client certificate the broker rejects and a CONNACK "not authorized" into one
"connection failed"; doctor needs to say which, so this speaks the first two packets itself.
"""

from __future__ import annotations

import socket
import ssl
import struct

_CONNACK_REASONS = {0x80: "unspecified error", 0x84: "unsupported protocol version",
                    0x85: "client identifier not valid", 0x86: "bad user name or password",
                    0x87: "not authorized", 0x88: "server unavailable", 0x89: "server busy",
                    0x8A: "banned", 0x8C: "bad authentication method"}


class ProbeError(Exception):
    """``kind`` is one of dns, refused, timeout, tls_verify, tls_refused, tls, auth, protocol."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(message)


def _utf8(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def connect_packet(client_id: str, username: str = "", password: bytes = b"",
                   keepalive: int = 10) -> bytes:
    flags = 0x02 | (0x80 if username else 0) | (0x40 if password else 0)  # clean start
    var = _utf8("MQTT") + bytes((5, flags)) + struct.pack(">H", keepalive) + b"\x00"
    payload = _utf8(client_id) + (_utf8(username) if username else b"") + \
        (struct.pack(">H", len(password)) + password if password else b"")
    body = var + payload
    return b"\x10" + _varint(len(body)) + body


def _read_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ProbeError("protocol", "the broker closed the connection before answering "
                                         "CONNECT")
        data += chunk
    return data


def probe(host: str, port: int, *, tls: ssl.SSLContext | None, client_id: str,
          username: str = "", password: bytes = b"", timeout: float = 3.0) -> float:
    """CONNECT and wait for CONNACK success; return the seconds it took. Raises ProbeError."""
    import time

    t0 = time.monotonic()
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except socket.gaierror as e:
        raise ProbeError("dns", f"cannot resolve {host}: {e.strerror}") from None
    except ConnectionRefusedError:
        raise ProbeError("refused", f"{host}:{port} refused the connection") from None
    except TimeoutError:
        raise ProbeError("timeout", f"no answer from {host}:{port} within {timeout} s") from None
    except OSError as e:
        raise ProbeError("refused", f"cannot reach {host}:{port}: {e.strerror}") from None
    sock: socket.socket = raw
    try:
        if tls is not None:
            sock = _handshake(raw, tls, host, timeout)
        try:
            sock.sendall(connect_packet(client_id, username, password))
            head = _read_exact(sock, 2)
            rest = _read_exact(sock, head[1])
        except ssl.SSLError as e:
            # TLS 1.3: the broker checks our certificate after the client's handshake
            # ends, so its refusal arrives as an alert on the first read.
            raise ProbeError("tls_refused", f"the broker refused this gateway's certificate "
                                            f"({_reason(e)})") from None
        except TimeoutError:
            raise ProbeError("timeout", f"{host}:{port} accepted the connection but did not "
                                        f"answer CONNECT within {timeout} s") from None
        except (ConnectionResetError, BrokenPipeError):
            raise ProbeError("tls_refused" if tls else "protocol",
                             f"{host}:{port} closed the connection during CONNECT") from None
        if head[0] != 0x20 or len(rest) < 2:  # noqa: PLR2004
            raise ProbeError("protocol", f"{host}:{port} did not answer like an MQTT 5 broker")
        code = rest[1]
        if code:
            reason = _CONNACK_REASONS.get(code, f"reason code 0x{code:02x}")
            raise ProbeError("auth", f"the broker refused the connection: {reason}")
        sock.sendall(b"\xe0\x00")  # DISCONNECT, normal
        return time.monotonic() - t0
    finally:
        sock.close()


def _handshake(raw: socket.socket, tls: ssl.SSLContext, host: str,
               timeout: float) -> socket.socket:
    try:
        sock = tls.wrap_socket(raw, server_hostname=host)
        sock.settimeout(timeout)
        return sock
    except ssl.SSLCertVerificationError as e:
        raise ProbeError("tls_verify", f"the broker's certificate does not verify: "
                                       f"{e.verify_message}") from None
    except ssl.SSLError as e:
        kind = "tls_refused" if "alert" in str(e).lower() else "tls"
        raise ProbeError(kind, f"TLS handshake failed: {_reason(e)}") from None
    except TimeoutError:
        raise ProbeError("timeout", "the TLS handshake timed out") from None
    except (ConnectionResetError, OSError) as e:
        raise ProbeError("tls", f"TLS handshake failed: {e}") from None


def _reason(e: ssl.SSLError) -> str:
    return (e.reason or str(e)).lower().replace("_", " ")
