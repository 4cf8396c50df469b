"""`cimedge points`: every configured point, where it is read from, and its last value.

The last value comes from the daemon's status.json when it lists one (``last``), else from
the newest reading still in the buffer; a point whose readings were all acknowledged and
pruned shows "-" until the next poll is committed.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import time
from typing import Any

import msgspec

from cimedge.edge import config as site_config
from cimedge.edge.errors import StoreError
from cimedge.provisioning import bufferdb
from cimedge.provisioning.clikit import Subparsers, add_where, command, config_path
from cimedge.provisioning.tail import iso


def configured(site: site_config.Site) -> list[dict[str, Any]]:
    out = []
    for name, dev in site.devices.items():
        where = _device_where(dev.config)
        for point, pcfg in dev.config.points.items():
            fields = msgspec.structs.asdict(pcfg) if isinstance(pcfg, msgspec.Struct) else {}
            source = " ".join(f"{fields[k]}" for k in ("table", "address", "dtype")
                              if fields.get(k) is not None)
            out.append({"point": f"{name}.{point}", "device": name, "driver": dev.driver,
                        "where": where, "source": source, "unit": site.units.get(
                            f"{name}.{point}", ""),
                        "poll_interval_s": getattr(dev.config, "poll_interval_s", None)})
    return out


def _device_where(cfg: Any) -> str:  # noqa: ANN401 - any driver's config struct
    if getattr(cfg, "transport", "") == "rtu" or isinstance(getattr(cfg, "port", None), str):
        return f"{cfg.port} unit {getattr(cfg, 'unit', '?')}"
    if getattr(cfg, "host", ""):
        return f"{cfg.host}:{cfg.port} unit {getattr(cfg, 'unit', '?')}"
    return ""


def with_last(site: site_config.Site, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    db = site.path(site.store.path)
    names = [r["point"] for r in rows]
    last: dict[str, dict[str, Any]] = _from_status(db.parent / "status.json")
    if db.exists():
        con = bufferdb.connect(db)
        try:
            for name, r in bufferdb.last_values(con, names).items():
                if name not in last or last[name]["ts"] < r["ts"]:
                    last[name] = r
        except sqlite3.Error as e:
            raise StoreError(f"cannot read the buffer {db}: {e}") from None
        finally:
            con.close()
    for r in rows:
        got = last.get(r["point"])
        r["value"] = got["value"] if got else None
        r["quality"] = got["quality"] if got else None
        r["ts"] = got["ts"] if got else None
    return rows


def _from_status(path: Any) -> dict[str, dict[str, Any]]:  # noqa: ANN401
    """status.json's ``last`` map {point: {ts, value, quality}}, when the daemon writes one."""
    try:
        last = json.loads(path.read_text()).get("last") or {}
    except (OSError, ValueError, AttributeError):
        return {}
    return {k: v for k, v in last.items() if isinstance(v, dict) and "ts" in v}


def render(rows: list[dict[str, Any]]) -> str:
    now = time.time()
    head = f"{'point':<26}{'value':>14} {'unit':<6}{'quality':<8}{'age':>8}  source"
    lines = [head]
    for r in rows:
        v = r["value"]
        text = "-" if v is None else str(v).lower() if isinstance(v, bool) else \
            f"{v:.6g}" if isinstance(v, float) else str(v)
        age = "-" if r["ts"] is None else f"{now - r['ts']:.0f} s"
        lines.append(f"{r['point']:<26}{text:>14} {r['unit']:<6}{r['quality'] or '-':<8}"
                     f"{age:>8}  {r['driver']} {r['where']} {r['source']}".rstrip())
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    site = site_config.load(config_path(args))
    rows = with_last(site, configured(site))
    if args.json:
        for r in rows:
            r["time"] = iso(r["ts"]) if r["ts"] else None
        print(json.dumps(rows, indent=2))
    else:
        print(render(rows))
    return 0


def add_parsers(sub: Subparsers) -> None:
    p = command(sub, "points", "list the configured points with their last values",
                "cimedge points --state-dir /var/lib/cimedge --json",
                description=__doc__.split("\n\n")[0].split(": ", 1)[1] + "\n\n"
                + __doc__.split("\n\n")[1])
    add_where(p)
    p.add_argument("--json", action="store_true", help="print the points as JSON")
    p.set_defaults(handler=run)
