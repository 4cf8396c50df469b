"""`cimedge`: one command for the demo, the daemon, the receiver and the technician's tasks."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from cimedge.edge.errors import CimEdgeError

EPILOG = {
    "demo": "example: cimedge demo --duration 60 --state-dir /tmp/cimedge-demo",
    "run": "example: cimedge run --config /etc/cimedge/site.toml",
    "keygen": "example: cimedge keygen --state-dir /var/lib/cimedge --device-id ps-0042 "
              "--site-type pump_station",
    "status": "example: cimedge status --state-dir /var/lib/cimedge",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cimedge", description=__doc__.split(":", 1)[1].strip())
    p.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cmd(name: str, help_: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_, description=help_, epilog=EPILOG[name],
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    d = cmd("demo", "run a simulated pump station end to end: simulator, broker, receiver, "
                    "gateway, with a live view")
    d.add_argument("--broker", metavar="mqtt://HOST:PORT",
                   help="use this broker instead of starting a private mosquitto")
    d.add_argument("--state-dir", type=Path, metavar="DIR",
                   help="keep keys, enrollment and SQLite files here "
                        "(default ~/.local/state/cimedge/demo)")
    d.add_argument("--duration", type=float, metavar="SECONDS",
                   help="stop cleanly after this long (default: until Ctrl-C)")
    d.add_argument("--speed", type=float, default=1.0,
                   help="simulated time factor for the wet well (default 1: a cycle in ~40 s)")
    d.add_argument("--site", choices=("pump_station", "lamp_pole", "roadside_unit",
                                      "utility_tunnel"),
                   help="run this site template (edge/sites/) on its simulator instead of the "
                        "classic one-pump station; state goes in a sub-folder named after it")
    d.add_argument("--no-view", action="store_true",
                   help="print a status line every few seconds instead of the live view")

    r = cmd("run", "run the gateway daemon on a site config (stops cleanly on SIGTERM)")
    r.add_argument("--config", type=Path, required=True, metavar="FILE")

    from cimedge.cloud_sync.receiver import cli as receiver_cli
    receiver_cli.add_parsers(sub)
    from cimedge.provisioning import commands as technician_cli
    technician_cli.add_parsers(sub)
    from cimedge.provisioning import node as node_cli
    node_cli.add_parsers(sub)

    k = cmd("keygen", "create a device key (0600) and its enrollment record")
    k.add_argument("--state-dir", type=Path, required=True, metavar="DIR")
    k.add_argument("--device-id", required=True, metavar="ID")
    k.add_argument("--site-type", default="pump_station", metavar="TYPE")
    k.add_argument("--location", default="")
    k.add_argument("--force", action="store_true", help="replace an existing key")

    s = cmd("status", "show a gateway's buffer, uplink and devices from its state dir")
    s.add_argument("--state-dir", type=Path, required=True, metavar="DIR")
    s.add_argument("--json", action="store_true", help="print the status as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return _dispatch(args)
    except CimEdgeError as e:
        print(f"cimedge: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from cimedge.provisioning import demo
        return demo.main(args)
    if args.command == "run":
        return _run(args.config)
    if hasattr(args, "handler"):  # command groups that live with their part
        return int(args.handler(args))
    if args.command == "keygen":
        return _keygen(args)
    if args.command == "status":
        return _status(args)
    raise AssertionError(args.command)


def _run(config: Path) -> int:
    from cimedge.edge import config as site_config
    from cimedge.edge.daemon import Gateway
    from cimedge.provisioning import rotate
    from cimedge.provisioning.identity import load_key
    from cimedge.stop import run_until_signalled

    site = site_config.load(config)
    key = load_key(site.path(site.gateway.key_file))
    # rotate.serve: SIGHUP makes the daemon sign with a re-read device.key (rotate-key)
    run_until_signalled(rotate.serve(Gateway(site, key), site.path(site.gateway.key_file)))
    return 0


def _keygen(args: argparse.Namespace) -> int:
    from cimedge.provisioning import identity

    identity.check_device_id(args.device_id)
    key = identity.write_key(args.state_dir / "device.key", force=args.force)
    record = identity.enrollment(key, args.device_id, args.site_type, args.location)
    identity.write_enrollment(args.state_dir / "enrollment.json", record)
    print(f"key {args.state_dir / 'device.key'} (kid {record['kid']}), "
          f"enrollment {args.state_dir / 'enrollment.json'}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from cimedge.provisioning import status

    report = status.read(args.state_dir)
    print(json.dumps(report, indent=2) if args.json else status.render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
