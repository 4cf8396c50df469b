"""`cimedge ca`: a test certificate authority, so mutual TLS can be tried on one machine.

A city runs its own PKI; this one is for the bench, the HIL rig and the tests. Its key is a
0600 file and it signs only device ids as client common names, because the broker turns a
certificate's CN into the MQTT user its ACL is written for (``cim/v1/{CN}/#``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from cimedge.provisioning import certs
from cimedge.provisioning.certs import CertError
from cimedge.provisioning.clikit import Subparsers, command
from cimedge.provisioning.identity import DEVICE_ID

CA_KEY, CA_CERT = "ca.key", "ca.pem"


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


def mosquitto_conf(ca_dir: Path, out_dir: Path, *, port: int = 8883, host: str = "127.0.0.1",
                   backend_user: str = "", anonymous_backend: bool = False) -> str:
    """A Mosquitto listener for mutual TLS with per-device ACLs; writes its files to out_dir.

    The certificate's CN becomes the MQTT user (use_identity_as_username), and the ACL lets
    user X publish and subscribe under cim/v1/X/ only (DESIGN.md section 9). The backend
    user, when named, may use every device's topics. ``anonymous_backend`` gives that right
    to clients without a user, which only a loopback test listener may allow.
    """
    names = [host] + (["localhost"] if host in ("127.0.0.1", "::1") else [])
    server_cert(ca_dir, names, out_dir)
    acl = ["# written by `cimedge ca mosquitto`: a device (certificate CN) may use only "
           "cim/v1/<its id>/"]
    if anonymous_backend:
        acl += ["# loopback test listener only: clients without a user are the backend",
                "topic readwrite cim/v1/#", ""]
    if backend_user:
        acl += [f"user {backend_user}", "topic readwrite cim/v1/#", ""]
    acl += ["pattern readwrite cim/v1/%u/#"]
    (out_dir / "acl").write_text("\n".join(acl) + "\n")
    conf = (f"listener {port} {host}\n"
            f"cafile {ca_dir.absolute() / CA_CERT}\n"
            f"certfile {out_dir.absolute() / 'server.pem'}\n"
            f"keyfile {out_dir.absolute() / 'server.key'}\n"
            "require_certificate true\n"
            "use_identity_as_username true\n"
            f"acl_file {out_dir.absolute() / 'acl'}\n")
    (out_dir / "mosquitto-tls.conf").write_text(conf)
    return conf


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
    m = command(csub, "mosquitto", "write a Mosquitto listener for mutual TLS with per-device "
                "ACLs (server certificate, config snippet, ACL file)",
                "cimedge ca mosquitto --ca-dir ~/cimedge-ca --out-dir /etc/mosquitto/conf.d "
                "--host broker.local --backend-user cim-ingest")
    m.add_argument("--ca-dir", type=Path, required=True, metavar="DIR")
    m.add_argument("--out-dir", type=Path, required=True, metavar="DIR")
    m.add_argument("--port", type=int, default=8883)
    m.add_argument("--host", default="127.0.0.1", help="address to listen on and certify")
    m.add_argument("--backend-user", default="", metavar="CN",
                   help="the receiver's certificate CN, allowed on every device's topics")
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
def _mosquitto(args: argparse.Namespace) -> int:
    args.out_dir.mkdir(parents=True, exist_ok=True)
    mosquitto_conf(args.ca_dir, args.out_dir, port=args.port, host=args.host,
                   backend_user=args.backend_user)
    print(f"wrote {args.out_dir / 'mosquitto-tls.conf'} (include it from mosquitto.conf), "
          f"{args.out_dir / 'acl'}, server.pem and server.key (0600)")
    return 0
