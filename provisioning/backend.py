"""`cimedge backend`: the backend's signing keys and the backend.json gateways trust (DESIGN §4a).

Operations makes the keys (Ed25519, 0600) and keeps them; gateways get backend.json, which
lists the public halves by role: ingest keys sign the receiver's acks to v2 gateways,
operations keys sign commands. A role may hold several keys, so a new one is trusted
before the old one goes. `cimedge doctor` checks a gateway's copy.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cimedge.cloud_sync import backend_keys as bk
from cimedge.cloud_sync.backend_keys import BackendFileError, BackendKey, BackendKeys
from cimedge.provisioning.checks import Context, Result, fail, ok, warn
from cimedge.provisioning.clikit import CONFIG_NAME, Subparsers, UsageError, command

DEMO_INGEST_KEY = "backend-ingest.key"
EXPIRY_WARN_S = 30 * 86400  # doctor warns this long before the last key of a role ends


def _read(path: Path, *, create: bool = False) -> BackendKeys:
    if create and not path.exists():
        return BackendKeys()
    return bk.load(path)


def add_key(path: Path, entry: BackendKey) -> BackendKeys:
    """backend.json at ``path`` with ``entry`` added (made when missing); written atomically."""
    keys = _read(path, create=True)
    old = next((k for k in keys.keys if k.kid == entry.kid), None)
    if old is not None:
        raise BackendFileError(path, f"already lists kid {entry.kid.hex()} (role {old.role})")
    new = BackendKeys((*keys.keys, entry))
    bk.write(path, new)
    return new


def public_key_of(path: Path) -> bytes:
    """The raw public key in a backend private key (0600 PEM), a public PEM or base64 file."""
    from cimedge.edge.commands import load_public_key
    from cimedge.edge.errors import ConfigError

    try:
        head = path.read_bytes()[:64]
    except OSError as e:
        raise BackendFileError(path, f"cannot read: {e.strerror}") from None
    if b"PRIVATE KEY" in head:
        return bk.load_private_key(path).public_key().public_bytes_raw()
    try:
        return load_public_key(path)
    except ConfigError as e:
        raise BackendFileError(path, e.reason) from None


def _time(text: str) -> float:
    try:
        return bk.parse_time("--not-after", text)
    except BackendFileError as e:
        raise argparse.ArgumentTypeError(e.reason) from None


# -- doctor ---------------------------------------------------------------------------------
def check(ctx: Context) -> list[Result]:
    """doctor: backend.json readable, an ingest key for a v2 gateway, operations keys for
    commands, none about to end, and no deprecated backend_key_file."""
    s = ctx.site
    assert s is not None  # noqa: S101 - doctor runs this only with a valid config
    path = s.path(s.gateway.backend_file)
    v2 = s.sync.contract == 2  # noqa: PLR2004
    legacy = s.commands is not None and bool(s.commands.backend_key_file)
    needs = [role for role, needed in (("ingest", v2),
                                       ("operations", s.commands is not None and not legacy))
             if needed]
    out: list[Result] = []
    if legacy:
        from cimedge.edge.commands import load_public_key
        from cimedge.edge.errors import ConfigError

        assert s.commands is not None  # noqa: S101 - legacy implies it
        try:
            load_public_key(s.path(s.commands.backend_key_file))
        except ConfigError as e:
            return [fail("backend", str(e), "the gateway does not start so: list the key in "
                         "backend.json (cimedge backend add) and remove backend_key_file")]
        out.append(warn("backend", "[commands] backend_key_file is deprecated (still trusted)",
                        f"run: cimedge backend add {s.path(s.commands.backend_key_file)} --role "
                        f"operations --backend {path}, then remove the setting"))
    if not path.exists():
        if not needs:
            return [*out, ok("backend", f"no {path.name}: this v1 gateway without commands "
                                        "needs none")]
        return [*out, fail("backend", f"no {path} ({' and '.join(needs)} keys needed): acks "
                                      "cannot be believed, so the buffer is never emptied"
                           if v2 else f"no {path}: every command is refused",
                           f"get backend.json from operations, then: cimedge backend install "
                           f"backend.json --state-dir {path.parent}")]
    try:
        keys = bk.load(path)
    except BackendFileError as e:
        return [*out, fail("backend", str(e), "get a valid backend.json from operations "
                                              "(cimedge backend list checks one)")]
    now = time.time()
    for role in needs:
        valid = [k for k in keys.of(role) if k.valid(now)]
        if not valid:
            out.append(fail("backend", f"{path} has no valid {role} key",
                            f"get a backend.json with a current {role} key from operations"))
            continue
        ends = [k.not_after for k in valid]
        if all(e is not None for e in ends) and max(e for e in ends if e) - now < EXPIRY_WARN_S:
            last = max(e for e in ends if e)
            out.append(warn("backend", f"every {role} key ends by {bk.rfc3339(last)}",
                            "get a backend.json with the next key from operations"))
    if not any(r.status == "fail" for r in out):
        out.append(ok("backend", f"{path}: {bk.describe(keys)}"))
    return out


# -- CLI ------------------------------------------------------------------------------------
def add_parsers(sub: Subparsers) -> None:
    b = sub.add_parser("backend", help="the backend's ack and command signing keys, and the "
                       "backend.json gateways trust", description=__doc__.split(": ", 1)[1],
                       epilog="example: cimedge backend keygen --role ingest --key "
                              "ingest-2027.key --backend backend.json",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    bsub = b.add_subparsers(dest="backend_command", required=True, metavar="COMMAND")
    k = command(bsub, "keygen", "make a backend key (Ed25519, 0600) and list it in backend.json",
                "cimedge backend keygen --role ingest --key ingest-2027.key --backend "
                "backend.json")
    k.add_argument("--role", required=True, choices=bk.ROLES,
                   help="ingest: the receiver signs acks with it; operations: commands")
    k.add_argument("--key", type=Path, required=True, metavar="FILE",
                   help="where the private key goes (0600; never give it to a gateway)")
    k.add_argument("--backend", type=Path, required=True, metavar="FILE",
                   help="the backend.json to list its public key in (made when missing)")
    k.add_argument("--not-after", type=_time, metavar="TIME",
                   help="RFC 3339 time after which gateways stop trusting it")
    k.add_argument("--force", action="store_true", help="replace an existing key file")
    k.set_defaults(handler=_keygen)
    a = command(bsub, "add", "list an existing key's public half in backend.json",
                "cimedge backend add backend.pub --role operations --backend backend.json",
                "List a key in backend.json: a backend private key file (0600 PEM), a public "
                "key PEM, or base64 of the raw 32 bytes (the old [commands] backend_key_file).")
    a.add_argument("key", type=Path, metavar="KEYFILE")
    a.add_argument("--role", required=True, choices=bk.ROLES)
    a.add_argument("--backend", type=Path, required=True, metavar="FILE")
    a.add_argument("--not-after", type=_time, metavar="TIME")
    a.set_defaults(handler=_add)
    e = command(bsub, "expire", "set or change a key's not_after (its planned end)",
                "cimedge backend expire 1a2b3c4d5e6f7a8b --at 2027-01-31T00:00:00Z "
                "--backend backend.json")
    e.add_argument("kid", metavar="KID")
    e.add_argument("--at", type=_time, required=True, metavar="TIME")
    e.add_argument("--backend", type=Path, required=True, metavar="FILE")
    e.set_defaults(handler=_expire)
    r = command(bsub, "remove", "drop a key from backend.json (after its rollover)",
                "cimedge backend remove 1a2b3c4d5e6f7a8b --backend backend.json")
    r.add_argument("kid", metavar="KID")
    r.add_argument("--backend", type=Path, required=True, metavar="FILE")
    r.set_defaults(handler=_remove)
    ls = command(bsub, "list", "check a backend.json and list its keys",
                 "cimedge backend list --backend backend.json --json")
    ls.add_argument("--backend", type=Path, required=True, metavar="FILE")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=_list)
    i = command(bsub, "install", "put a backend.json on a gateway (a running one picks it up)",
                "cimedge backend install backend.json --state-dir /var/lib/cimedge",
                "Check a backend.json and install it where the gateway's [gateway] backend_file "
                "says (backend.json in the state dir by default). A running gateway re-reads "
                "it when an ack or a command names a key it does not know.")
    i.add_argument("file", type=Path, metavar="BACKEND.json")
    i.add_argument("--state-dir", type=Path, required=True, metavar="DIR")
    i.set_defaults(handler=_install)


def _keygen(args: argparse.Namespace) -> int:
    _read(args.backend, create=True)  # a broken backend.json: refuse before making a key
    key = bk.write_private_key(args.key, force=args.force)
    entry = bk.entry_for(key, args.role, args.not_after)
    add_key(args.backend, entry)
    print(f"{args.role} key {args.key} (0600, kid {entry.kid.hex()}), listed in {args.backend}")
    return 0


def _add(args: argparse.Namespace) -> int:
    raw = public_key_of(args.key)
    entry = BackendKey(bk.kid_for(raw), raw, args.role, args.not_after)
    add_key(args.backend, entry)
    print(f"listed {args.role} key {entry.kid.hex()} in {args.backend}")
    return 0


def _find(keys: BackendKeys, kid: str, path: Path) -> int:
    for i, k in enumerate(keys.keys):
        if k.kid.hex() == kid.lower():
            return i
    raise UsageError("KID", f"{path} lists no key {kid}")


def _expire(args: argparse.Namespace) -> int:
    keys = bk.load(args.backend)
    i = _find(keys, args.kid, args.backend)
    old = keys.keys[i]
    new = BackendKey(old.kid, old.public_key, old.role, args.at)
    bk.write(args.backend, BackendKeys((*keys.keys[:i], new, *keys.keys[i + 1:])))
    print(f"{old.role} key {old.kid.hex()} ends {bk.rfc3339(args.at)}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    keys = bk.load(args.backend)
    i = _find(keys, args.kid, args.backend)
    gone = keys.keys[i]
    rest = BackendKeys((*keys.keys[:i], *keys.keys[i + 1:]))
    if gone.role == "ingest" and not rest.of("ingest"):
        raise UsageError("KID", f"{gone.kid.hex()} is the last ingest key: v2 gateways would "
                                "refuse every ack; add its successor first")
    bk.write(args.backend, rest)
    print(f"removed {gone.role} key {gone.kid.hex()} from {args.backend}")
    return 0


def _list(args: argparse.Namespace) -> int:
    keys = bk.load(args.backend)
    now = time.time()
    rows = [{"kid": k.kid.hex(), "role": k.role, "valid": k.valid(now),
             "not_after": bk.rfc3339(k.not_after) if k.not_after else None} for k in keys.keys]
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print(f"{args.backend}: no keys")
    for r in rows if not args.json else []:
        end = f"until {r['not_after']}" if r["not_after"] else "no end"
        print(f"{r['kid']}  {r['role']:<10}  {end}{'' if r['valid'] else '  (ENDED)'}")
    return 0


def ensure_demo_keys(state_dir: Path) -> Ed25519PrivateKey:
    """The demo's own backend: an ingest key (0600) and the gateway's backend.json."""
    key_path, path = state_dir / DEMO_INGEST_KEY, state_dir / bk.FILE_NAME
    key = bk.load_private_key(key_path) if key_path.exists() else \
        bk.write_private_key(key_path)
    entry = bk.entry_for(key, "ingest")
    if not path.exists() or _read(path).find(entry.kid, "ingest") is None:
        bk.write(path, BackendKeys((entry,)))
    return key


def install_path(state_dir: Path) -> Path:
    """Where the gateway in ``state_dir`` reads backend.json (its [gateway] backend_file)."""
    from cimedge.edge import config as site_config

    cfg = state_dir / CONFIG_NAME
    if cfg.exists():
        site = site_config.load(cfg)
        return site.path(site.gateway.backend_file)
    return state_dir / bk.FILE_NAME


def _install(args: argparse.Namespace) -> int:
    keys = bk.load(args.file)
    if not keys.keys:
        raise BackendFileError(args.file, "lists no key")
    target = install_path(args.state_dir)
    try:
        bk.write(target, keys)
    except OSError as e:
        raise BackendFileError(target, f"cannot write: {e.strerror}") from None
    print(f"installed {target}: {bk.describe(keys)}")
    return 0
