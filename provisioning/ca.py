"""`cimedge ca`: a test certificate authority, so mutual TLS can be tried on one machine.

A city runs its own PKI; this one is for the bench, the HIL rig and the tests. Its key is a
0600 file. It signs device ids as gateways' client common names, because the broker turns a
certificate's CN into the MQTT user its ACL is written for (``cim/v1/{CN}/...``), and
backend names (with a dot, so no device id can ever be one) for receivers.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import re
import shutil
import stat
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from cimedge.cloud_sync.transport import MAX_PACKET_SIZE  # the clients' own limit too
from cimedge.provisioning import certs
from cimedge.provisioning.certs import CertError
from cimedge.provisioning.clikit import Subparsers, command
from cimedge.provisioning.identity import DEVICE_ID

CA_KEY, CA_CERT = "ca.key", "ca.pem"
# A backend client's name: never a device id (those have no dot), so a gateway's certificate
# can never carry the backend's rights.
BACKEND_NAME = re.compile(r"[a-z0-9-]{1,64}(\.[a-z0-9-]{1,64}){1,3}")
BROKER_USER = "mosquitto"  # Mosquitto started as root drops to this user before reading keys


def paths(ca_dir: Path) -> tuple[Path, Path]:
    return ca_dir / CA_KEY, ca_dir / CA_CERT


def init(ca_dir: Path, name: str = "CIM Edge test CA", *, days: int = 3650,
         force: bool = False) -> Path:
    """Create ca.key (0600) and ca.pem in ``ca_dir``; refuse to replace them without force."""
    key_path, cert_path = paths(ca_dir)
    if key_path.exists() and not force:
        raise CertError(f"{key_path} already holds a CA key; pass --force to replace it "
                        "(every certificate it signed stops verifying)")
    key, cert = certs.make_ca(name, days)
    certs.write_private(key_path, certs.key_pem(key))
    certs.write_public(cert_path, certs.cert_pem(cert))
    return cert_path


def load(ca_dir: Path) -> tuple[object, x509.Certificate]:
    key_path, cert_path = paths(ca_dir)
    if not key_path.exists():
        raise CertError(f"{ca_dir} holds no CA: run `cimedge ca init --ca-dir {ca_dir}` first")
    return certs.load_key(key_path), certs.load_cert(cert_path)


def sign_csr(ca_dir: Path, csr_path: Path, out: Path, *, days: int = 365) -> x509.Certificate:
    """Sign a device's CSR as a TLS client certificate; its CN must be a device id."""
    ca_key, ca_cert = load(ca_dir)
    csr = certs.load_csr(csr_path)
    cn = certs.common_name(csr.subject)
    if not DEVICE_ID.fullmatch(cn):
        raise CertError(f"{csr_path}: common name {cn!r} is not a device id (3-64 of a-z, 0-9 "
                        "and -); the broker's ACL is keyed on it")
    cert = certs.sign(ca_key, ca_cert, csr.subject, csr.public_key(), days=days)  # type: ignore[arg-type]
    certs.write_public(out, certs.cert_pem(cert))
    return cert


def server_cert(ca_dir: Path, names: list[str], out_dir: Path, *, days: int = 825) -> Path:
    """A broker's key (0600) and certificate for ``names`` (DNS names or IP addresses)."""
    ca_key, ca_cert = load(ca_dir)
    key = certs.new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    cert = certs.sign(ca_key, ca_cert, subject, key.public_key(), days=days,  # type: ignore[arg-type]
                      server_names=names)
    certs.write_private(out_dir / "server.key", certs.key_pem(key))
    certs.write_public(out_dir / "server.pem", certs.cert_pem(cert))
    return out_dir / "server.pem"


def client_cert(ca_dir: Path, name: str, out_dir: Path, *, days: int = 365) -> Path:
    """A backend client's key (0600) and certificate, CN = ``name`` (a receiver, say)."""
    check_backend_name(name)
    ca_key, ca_cert = load(ca_dir)
    key = certs.new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                         x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "backend")])
    cert = certs.sign(ca_key, ca_cert, subject, key.public_key(),  # type: ignore[arg-type]
                      days=days)
    certs.write_private(out_dir / f"{name}.key", certs.key_pem(key))
    certs.write_public(out_dir / f"{name}.crt", certs.cert_pem(cert))
    return out_dir / f"{name}.crt"


def check_backend_name(name: str) -> None:
    if not BACKEND_NAME.fullmatch(name):
        raise CertError(f"backend name {name!r} must hold a dot (backend.ingest-1, say): a name "
                        "without one could be a device id, and a gateway's certificate would "
                        "then carry the backend's rights")


def acl_text(backend_users: Sequence[str], *, anonymous_backend: bool = False) -> str:
    """The ACL: each device its own topics one way, the backend every device's the other way.

    A device (user = its certificate's CN) may publish only its batch, event and status and
    read only its ack and cmd; the backend reads batch, event and status and publishes ack
    and cmd. So no device can forge an ack, nor the backend a batch. (Mosquitto grants a
    SUBSCRIBE and applies "read" when it delivers, so a topic without read access stays
    silent to its subscriber.)
    """
    backend = ["topic read cim/v1/+/batch", "topic read cim/v1/+/event",
               "topic read cim/v1/+/status", "topic write cim/v1/+/ack",
               "topic write cim/v1/+/cmd"]
    acl = ["# written by `cimedge ca mosquitto` (DESIGN.md section 9): a device (certificate",
           "# CN) publishes only its batch, event and status and reads only its ack and cmd;",
           "# the backend the reverse.", ""]
    if anonymous_backend:
        acl += ["# loopback test listener only: clients without a user are the backend",
                *backend, ""]
    for user in backend_users:
        acl += [f"user {user}", *backend, ""]
    acl += ["pattern write cim/v1/%u/batch", "pattern write cim/v1/%u/event",
            "pattern write cim/v1/%u/status", "pattern read cim/v1/%u/ack",
            "pattern read cim/v1/%u/cmd"]
    return "\n".join(acl) + "\n"


def mosquitto_conf(ca_dir: Path, out_dir: Path, *, port: int = 8883, host: str = "127.0.0.1",
                   backend_user: str | Sequence[str] = (), anonymous_backend: bool = False,
                   broker_user: str = BROKER_USER) -> str:
    """A Mosquitto listener for mutual TLS with per-device ACLs; writes its files to out_dir.

    The certificate's CN becomes the MQTT user (use_identity_as_username) and the client id
    (use_username_as_clientid), so a certificate cannot take over another client's session;
    the ACL is ``acl_text``. The backend users, when named, are the receivers' certificate
    CNs (one each: they are their client ids too). ``anonymous_backend`` gives the backend's
    rights to clients without a user, which only a loopback test listener may allow.

    Everything the broker reads is in ``out_dir`` (the CA certificate is copied there). Run
    as root, the server key is given to ``broker_user`` (still 0600): Mosquitto started as
    root drops to that user before it loads the key.
    """
    users = [backend_user] if isinstance(backend_user, str) else list(backend_user)
    for user in filter(None, users):
        check_backend_name(user)
    names = [host] + (["localhost"] if host in ("127.0.0.1", "::1") else [])
    server_cert(ca_dir, names, out_dir)
    shutil.copyfile(ca_dir / CA_CERT, out_dir / CA_CERT)
    _give_key(out_dir / "server.key", broker_user)
    (out_dir / "acl").write_text(acl_text([u for u in users if u],
                                          anonymous_backend=anonymous_backend))
    d = out_dir.absolute()
    conf = (f"listener {port} {host}\n"
            f"cafile {d / CA_CERT}\n"
            f"certfile {d / 'server.pem'}\n"
            f"keyfile {d / 'server.key'}\n"
            "require_certificate true\n"
            "use_identity_as_username true\n"
            # the client id is the certificate's CN: no device can take over another's session
            "use_username_as_clientid true\n"
            f"acl_file {d / 'acl'}\n"
            # Refused at the packet header, before the broker reads a byte of the body
            # (message_size_limit would read it all first; Mosquitto 2 recommends this one).
            f"max_packet_size {MAX_PACKET_SIZE}\n")
    (out_dir / "mosquitto-tls.conf").write_text(conf)
    return conf


def _give_key(path: Path, user: str) -> None:
    """As root, make the key the broker user's (0600 kept); otherwise leave it ours."""
    if os.geteuid() != 0 or not user:
        return
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return  # no such user: Mosquitto then runs as nobody or as set by `user`; see README
    os.chown(path, pw.pw_uid, pw.pw_gid)


def unreachable(path: Path, user: str = BROKER_USER) -> Path | None:
    """The first folder above ``path`` that ``user`` cannot enter (None: it can reach it)."""
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return None
    groups = {pw.pw_gid} | {g.gr_gid for g in _groups() if user in g.gr_mem}
    for folder in [*reversed(path.absolute().parents), path.absolute()]:
        st = folder.stat()
        if pw.pw_uid == 0 or st.st_mode & stat.S_IXOTH:
            continue
        if st.st_uid == pw.pw_uid and st.st_mode & stat.S_IXUSR:
            continue
        if st.st_gid in groups and st.st_mode & stat.S_IXGRP:
            continue
        return folder
    return None


def _groups() -> list:  # type: ignore[type-arg]
    import grp

    return grp.getgrall()


def describe(cert: x509.Certificate) -> dict[str, object]:
    return {"subject": cert.subject.rfc4514_string(), "issuer": cert.issuer.rfc4514_string(),
            "serial": format(cert.serial_number, "x"),
            "not_before": cert.not_valid_before_utc.isoformat().replace("+00:00", "Z"),
            "not_after": cert.not_valid_after_utc.isoformat().replace("+00:00", "Z")}


# -- CLI -----------------------------------------------------------------------------------
def add_parsers(sub: Subparsers) -> None:
    ca = sub.add_parser("ca", help="a test certificate authority for mutual TLS on one machine",
                        description=__doc__.split("\n\n")[0].split(": ", 1)[1],
                        epilog="example: cimedge ca init --ca-dir ~/cimedge-ca",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    csub = ca.add_subparsers(dest="ca_command", required=True, metavar="COMMAND")
    i = command(csub, "init", "create a CA key (0600) and its self-signed certificate",
            "cimedge ca init --ca-dir ~/cimedge-ca")
    i.add_argument("--ca-dir", type=Path, required=True, metavar="DIR")
    i.add_argument("--name", default="CIM Edge test CA", help="the CA's common name")
    i.add_argument("--days", type=int, default=3650)
    i.add_argument("--force", action="store_true", help="replace an existing CA")
    i.set_defaults(handler=_init)
    s = command(csub, "sign", "sign a gateway's CSR (tls.csr) as its TLS client certificate",
            "cimedge ca sign /var/lib/cimedge/tls.csr --ca-dir ~/cimedge-ca")
    s.add_argument("csr", type=Path, metavar="CSR")
    s.add_argument("--ca-dir", type=Path, required=True, metavar="DIR")
    s.add_argument("--out", type=Path, metavar="FILE",
                   help="where the certificate goes (default: the CSR's name ending .crt)")
    s.add_argument("--days", type=int, default=365)
    s.add_argument("--json", action="store_true", help="print the certificate's details as JSON")
    s.set_defaults(handler=_sign)
    v = command(csub, "server", "make a broker key and certificate for host names or addresses",
            "cimedge ca server --ca-dir ~/cimedge-ca --name localhost --name 127.0.0.1 "
            "--out-dir /etc/mosquitto/certs")
    v.add_argument("--ca-dir", type=Path, required=True, metavar="DIR")
    v.add_argument("--name", action="append", required=True, metavar="HOST",
                   help="a DNS name or IP address the broker is reached by (repeatable)")
    v.add_argument("--out-dir", type=Path, required=True, metavar="DIR",
                   help="writes server.key (0600) and server.pem here")
    v.add_argument("--days", type=int, default=825)
    v.set_defaults(handler=_server)
    c = command(csub, "client", "make a backend client's key (0600) and certificate, such as "
                "a receiver's", "cimedge ca client --ca-dir ~/cimedge-ca --name backend.ingest-1 "
                "--out-dir ~/receiver-tls",
                "Make a TLS client key (EC P-256, 0600) and certificate for a backend client "
                "(a receiver), CN = --name. Backend names hold a dot, so no device id is one. "
                "Name each receiver in `cimedge ca mosquitto --backend-user`.")
    c.add_argument("--ca-dir", type=Path, required=True, metavar="DIR")
    c.add_argument("--name", required=True, metavar="NAME",
                   help="the certificate's CN: the MQTT user and client id (backend.ingest-1)")
    c.add_argument("--out-dir", type=Path, required=True, metavar="DIR",
                   help="writes NAME.key (0600) and NAME.crt here")
    c.add_argument("--days", type=int, default=365)
    c.set_defaults(handler=_client)
    m = command(csub, "mosquitto", "write a Mosquitto listener for mutual TLS with per-device "
                "ACLs (server certificate, config snippet, ACL file)",
                "cimedge ca mosquitto --ca-dir ~/cimedge-ca --out-dir /etc/mosquitto/cimedge "
                "--host broker.invalid --backend-user backend.ingest-1")
    m.add_argument("--ca-dir", type=Path, required=True, metavar="DIR")
    m.add_argument("--out-dir", type=Path, required=True, metavar="DIR",
                   help="where the broker's files go; the broker's user must reach it")
    m.add_argument("--port", type=int, default=8883)
    m.add_argument("--host", default="127.0.0.1", help="address to listen on and certify")
    m.add_argument("--backend-user", action="append", default=[], metavar="NAME",
                   help="a receiver's certificate CN (cimedge ca client), allowed to read "
                        "every device's batch, event and status and to send acks and "
                        "commands; repeatable, one per receiver")
    m.add_argument("--broker-user", default=BROKER_USER, metavar="USER",
                   help="the user Mosquitto runs as; run as root, this command gives it the "
                        "server key (default mosquitto)")
    m.set_defaults(handler=_mosquitto)


def _writing(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A file the CA cannot write is one sentence, not a traceback."""
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return int(handler(args))
        except OSError as e:
            raise CertError(f"cannot write {e.filename}: {e.strerror}") from None
    return wrapped


@_writing
def _init(args: argparse.Namespace) -> int:
    cert = init(args.ca_dir, args.name, days=args.days, force=args.force)
    print(f"CA {args.name!r}: key {args.ca_dir / CA_KEY} (0600), certificate {cert}")
    return 0


@_writing
def _sign(args: argparse.Namespace) -> int:
    out = args.out or args.csr.with_suffix(".crt")
    cert = sign_csr(args.ca_dir, args.csr, out, days=args.days)
    info = describe(cert)
    if args.json:
        print(json.dumps({"certificate": str(out), **info}, indent=2))
    else:
        print(f"certificate {out} for {info['subject']}, valid until {info['not_after']}")
    return 0


@_writing
def _server(args: argparse.Namespace) -> int:
    cert = server_cert(args.ca_dir, args.name, args.out_dir, days=args.days)
    print(f"broker certificate {cert} for {', '.join(args.name)}, key "
          f"{args.out_dir / 'server.key'} (0600)")
    return 0


@_writing
def _client(args: argparse.Namespace) -> int:
    cert = client_cert(args.ca_dir, args.name, args.out_dir, days=args.days)
    print(f"client certificate {cert} for CN={args.name}, key "
          f"{args.out_dir / (args.name + '.key')} (0600)")
    return 0


@_writing
def _mosquitto(args: argparse.Namespace) -> int:
    args.out_dir.mkdir(parents=True, exist_ok=True)
    mosquitto_conf(args.ca_dir, args.out_dir, port=args.port, host=args.host,
                   backend_user=args.backend_user, broker_user=args.broker_user)
    conf = args.out_dir / "mosquitto-tls.conf"
    owner = (f"owned by {args.broker_user}" if os.geteuid() == 0 and _user_exists(
        args.broker_user) else "yours: the broker must run as you, or chown it to its user")
    print(f"wrote {conf} (run: mosquitto -c {conf}, or include it from mosquitto.conf), "
          f"acl, ca.pem, server.pem and server.key (0600, {owner})")
    blocked = unreachable(args.out_dir, args.broker_user)
    if blocked is not None:
        print(f"warning: {args.broker_user} cannot enter {blocked}, so Mosquitto will not "
              f"read these files: choose an --out-dir it can reach (/etc/mosquitto/cimedge)",
              file=sys.stderr)
    return 0


def _user_exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True
