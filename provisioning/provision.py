"""`cimedge provision`: a gateway's identity, TLS request, enrollment record and site config.

Everything is prepared and checked in memory first (template edits, the config validated by
the site loader) and only then written, so a refusal leaves the state dir as it was. The
device key is never replaced without --force.
"""

from __future__ import annotations

import argparse
import json
import string
from pathlib import Path
from typing import Any

from cryptography import x509

from cimedge.cloud_sync import backend_keys
from cimedge.edge import config as site_config
from cimedge.edge.errors import CimEdgeError, ConfigError
from cimedge.provisioning import certs, identity, tomledit
from cimedge.provisioning.clikit import CONFIG_NAME, Subparsers, UsageError, command, default_state_dir

FALLBACK_BROKER = "mqtts://localhost:8883"
KEY, ENROLLMENT, TLS_KEY, TLS_CSR, TLS_CERT, CA_CERT, BACKEND = (
    "device.key", "enrollment.json", "tls.key", "tls.csr", "tls.crt", "ca.pem", "backend.json")


def site_types() -> list[str]:
    """The site types with a template (edge/sites/; pump_station always, see template())."""
    try:
        from cimedge.edge import sites
    except ImportError:
        return ["pump_station"]
    return sorted({*sites.TYPES, "pump_station"})


def template(args: argparse.Namespace) -> tuple[str, str]:
    """(TOML text, where it came from): the site type's template with its placeholders filled.

    ``--set name=VALUE`` (no dot) fills a template placeholder such as ps1_host; the device id
    and the broker fill theirs. Without edge/sites, pump_station falls back to the demo's
    config (a pump station on the Modbus TCP simulator at 127.0.0.1:5020).
    """
    values: dict[str, Any] = {"device_id": args.device_id}
    if args.broker:
        values["broker"] = args.broker
    for item in args.set:
        name, sep, raw = item.partition("=")
        if sep and "." not in name:
            values[name] = raw
    try:
        from cimedge.edge import sites
    except ImportError:
        sites = None  # type: ignore[assignment]
    if args.template is not None:
        try:
            raw_text = args.template.read_text(encoding="utf-8")
        except OSError as e:
            raise UsageError("--template", f"cannot read {args.template}: {e.strerror}") from None
        defaults = {"broker": FALLBACK_BROKER, "store_path": "buffer.sqlite"}
        if sites is not None:  # a custom template for a known site type: that type's defaults
            defaults |= {**sites.COMMON, **sites.DEFAULTS.get(args.site_type, {})}
        return _fill(raw_text, {**defaults, **values}, str(args.template)), str(args.template)
    if sites is not None and args.site_type in sites.TYPES:
        source = f"edge/sites/{args.site_type}.toml"
        merged = {**sites.COMMON, **sites.DEFAULTS.get(args.site_type, {}), **values}
        return _fill(sites.text(args.site_type), merged, source), source
    if args.site_type == "pump_station":
        from cimedge.provisioning.demo import site_toml

        return site_toml(args.broker or FALLBACK_BROKER, 5020, device_id=args.device_id), \
            "the demo's pump station"
    raise UsageError("--site-type", f"no template for {args.site_type!r} (known: "
                                    f"{', '.join(site_types())}); or pass --template FILE")


def _fill(text: str, values: dict[str, Any], source: str) -> str:
    try:
        return string.Template(text).substitute(values)
    except KeyError as e:
        raise UsageError("--set", f"{source} needs a value for ${e.args[0]}: pass --set "
                                  f"{e.args[0]}=VALUE") from None
    except ValueError as e:
        raise CimEdgeError(f"{source}: a $ that is no placeholder: {e}") from None


def site_config_text(text: str, source: str, args: argparse.Namespace, target: Path) -> str:
    """The template with this gateway's identity, broker, TLS files and --set edits."""
    edits: list[tuple[str, str, Any]] = [
        ("gateway", "device_id", args.device_id), ("gateway", "site_type", args.site_type),
        ("gateway", "key_file", KEY)]
    if args.location:
        edits.append(("gateway", "location", args.location))
    broker = args.broker or _template_broker(text, source) or FALLBACK_BROKER
    edits.append(("sync", "broker", broker))
    if broker.startswith("mqtts://"):
        edits += [("sync", "ca_file", CA_CERT), ("sync", "cert_file", TLS_CERT),
                  ("sync", "key_file", TLS_KEY)]
    for table, key, value in edits:
        try:
            text = tomledit.set_key(text, table, key, value)
        except tomledit.EditError as e:
            raise CimEdgeError(f"{source}: cannot set [{table}] {key}: {e}") from None
    for item in args.set:
        dotted, sep, raw = item.partition("=")
        if not sep:
            raise UsageError("--set", f"{item!r} is not NAME=VALUE or TABLE.KEY=VALUE "
                                      "(ps1_host=10.0.0.5, devices.ps1.port=/dev/ttyUSB0)")
        if "." not in dotted:
            continue  # a template placeholder, filled in by template()
        table, _, key = dotted.rpartition(".")
        try:
            text = tomledit.set_key(text, table, key, tomledit.parse_value(raw), create=False)
        except tomledit.EditError as e:
            raise UsageError("--set", f"{item!r}: {e} in {source}") from None
    try:
        site_config.loads(text, str(target))
    except ConfigError as e:
        raise CimEdgeError(f"the site config made from {source} is not valid: {e}") from None
    return text


def _template_broker(text: str, source: str) -> str | None:
    try:
        value = tomledit.get(text, "sync.broker")
    except ValueError:
        raise CimEdgeError(f"{source} is not valid TOML") from None
    return value if isinstance(value, str) and value.startswith("mqtt") else None


def provision(args: argparse.Namespace) -> dict[str, Any]:
    """Create the gateway's files in its state dir; return what was written."""
    identity.check_device_id(args.device_id)
    state: Path = (args.state_dir or default_state_dir()).absolute()
    key_path = state / KEY
    if key_path.exists() and not args.force:
        raise CimEdgeError(f"{key_path} already holds a key; pass --force to replace this "
                           "gateway's identity, or run `cimedge rotate-key` to rotate it")
    text, source = template(args)
    config = site_config_text(text, source, args, state / CONFIG_NAME)
    keys = None
    if args.backend is not None:
        keys = backend_keys.load(args.backend)  # checked before anything is written
    tls_key = certs.new_key()
    csr = certs.csr_for(tls_key, args.device_id, args.site_type)
    cert = ca_pem = None
    if args.ca_dir:
        from cimedge.provisioning import ca

        ca_key, ca_cert = ca.load(args.ca_dir)
        req = x509.load_pem_x509_csr(csr)
        cert = certs.sign(ca_key, ca_cert, req.subject, req.public_key(), days=365)  # type: ignore[arg-type]
        ca_pem = certs.cert_pem(ca_cert)
    try:
        state.mkdir(parents=True, exist_ok=True)
        key = identity.write_key(key_path, force=True)
        record = identity.enrollment(key, args.device_id, args.site_type, args.location)
        identity.write_enrollment(state / ENROLLMENT, record)
        certs.write_private(state / TLS_KEY, certs.key_pem(tls_key))
        certs.write_public(state / TLS_CSR, csr)
        if cert is not None and ca_pem is not None:
            certs.write_public(state / TLS_CERT, certs.cert_pem(cert))
            certs.write_public(state / CA_CERT, ca_pem)
        certs.write_public(state / CONFIG_NAME, config.encode())
        if keys is not None:
            backend_keys.write(state / BACKEND, keys)
    except OSError as e:
        raise CimEdgeError(f"cannot write to {state}: {e.strerror}") from None
    files = {"key": KEY, "enrollment": ENROLLMENT, "tls_key": TLS_KEY, "tls_csr": TLS_CSR,
             "site_config": CONFIG_NAME}
    if cert is not None:
        files |= {"tls_cert": TLS_CERT, "ca_cert": CA_CERT}
    if keys is not None:
        files["backend"] = BACKEND
    return {"device_id": args.device_id, "site_type": args.site_type, "state_dir": str(state),
            "kid": record["kid"], "template": source,
            "broker": tomledit.get(config, "sync.broker"), "files": files}


def render(r: dict[str, Any]) -> str:
    state, files = Path(r["state_dir"]), r["files"]
    lines = [f"provisioned {r['device_id']} ({r['site_type']}) in {state}",
             f"  key          {files['key']}  Ed25519, 0600, kid {r['kid']}",
             f"  enrollment   {files['enrollment']}  give it to operations: "
             f"cimedge registry add {state / files['enrollment']}",
             f"  TLS key      {files['tls_key']}  EC P-256, 0600",
             f"  TLS request  {files['tls_csr']}  CN={r['device_id']}"]
    if "tls_cert" in files:
        lines.append(f"  certificate  {files['tls_cert']}  signed by the CA, with "
                     f"{files['ca_cert']}")
    else:
        lines.append(f"               have it signed by the city CA and save the certificate "
                     f"as {state / TLS_CERT} (test CA: cimedge ca sign)")
    if "backend" in files:
        lines.append(f"  backend      {files['backend']}  the keys whose acks and commands it "
                     "believes")
    else:
        lines.append(f"               no backend.json yet: get it from operations, then "
                     f"cimedge backend install backend.json --state-dir {state}")
    lines += [f"  site config  {files['site_config']}  from {r['template']}, broker "
              f"{r['broker']}",
              f"next: check the devices' ports in {state / CONFIG_NAME}, then "
              f"cimedge doctor --state-dir {state}"]
    return "\n".join(lines)


def add_parsers(sub: Subparsers) -> None:
    p = command(sub, "provision", "create a gateway's key, TLS request, enrollment record and "
                "site config from its site type's template",
                "cimedge provision --site-type pump_station --device-id ps-0042 "
                "--location 'Riverside PS, cabinet 2' --broker mqtts://broker.city:8883",
                description=__doc__.split("\n\n")[0].split(": ", 1)[1] + "\n\n"
                + __doc__.split("\n\n")[1])
    p.add_argument("--site-type", required=True, metavar="TYPE",
                   help=f"the site template ({', '.join(site_types())})")
    p.add_argument("--device-id", required=True, metavar="ID",
                   help="3-64 of a-z, 0-9 and -; the MQTT topic and certificate name")
    p.add_argument("--location", default="", help="free text for the registry")
    p.add_argument("--state-dir", type=Path, metavar="DIR",
                   help="where the gateway's files go (default $CIMEDGE_STATE_DIR or "
                        "~/.local/state/cimedge)")
    p.add_argument("--broker", metavar="URL",
                   help="mqtts://HOST:PORT (default: the template's)")
    p.add_argument("--template", type=Path, metavar="FILE",
                   help="use this site TOML instead of the site type's template")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="fill a template placeholder (ps1_host=10.0.0.5) or change a value "
                        "(devices.ps1.port=/dev/ttyUSB0); repeatable")
    p.add_argument("--ca-dir", type=Path, metavar="DIR",
                   help="sign the TLS request with this test CA right away (cimedge ca init)")
    p.add_argument("--backend", type=Path, metavar="FILE",
                   help="the backend.json from operations: the keys whose acks and commands "
                        "this gateway believes (cimedge backend keygen makes one)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing identity (the old key is gone for good)")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    result = provision(args)
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0

