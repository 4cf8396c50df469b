"""The peer, ThingsBoard IoT Gateway from PyPI: its own venv, its config files, its command line.

The peer never touches our venv: it is installed with pip into ``.peer-venv`` beside this file
(gitignored), together with the pymodbus its Modbus connector pins, so the connector does not
run pip at start-up (it would otherwise install pymodbus there and then).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.compare.rig import Gateway
from bench.compare.site import Site

VERSION = "3.8.5"
PYMODBUS = "3.9.2"  # the connector checks for exactly this version and pip-installs it if absent
DEFAULT_VENV = Path(__file__).resolve().parent / ".peer-venv"
TOKEN = "cmp-peer-token"  # noqa: S105 - a username on a private loopback broker, not a secret

# What a self-hosted ThingsBoard answers to getSessionLimits with no rate limits configured.
SESSION_LIMITS = {
    "maxPayloadSize": 65536,
    "maxInflightMessages": 100,
    "rateLimits": {"messages": "0:0,", "telemetryMessages": "0:0,", "telemetryDataPoints": "0:0,"},
    "gatewayRateLimits": {"messages": "0:0,", "telemetryMessages": "0:0,",
                          "telemetryDataPoints": "0:0,"},
}


def installed_version(venv: Path) -> str | None:
    """The thingsboard-gateway version in ``venv``, or None."""
    py = venv / "bin" / "python"
    if not py.exists():
        return None
    out = subprocess.run([str(py), "-c", "import importlib.metadata as m;"
                          "print(m.version('thingsboard-gateway'), m.version('pymodbus'))"],
                         capture_output=True, text=True, check=False)
    parts = out.stdout.split()
    return parts[0] if out.returncode == 0 and parts[1:] == [PYMODBUS] else None


def install(venv: Path = DEFAULT_VENV, out=sys.stderr) -> Path:  # noqa: ANN001
    """Make ``venv`` and pip-install the peer into it, unless it is there already."""
    if installed_version(venv) == VERSION:
        return venv
    print(f"installing thingsboard-gateway {VERSION} into {venv} (once)", file=out, flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                    "--disable-pip-version-check", f"thingsboard-gateway=={VERSION}",
                    f"pymodbus=={PYMODBUS}", "pyserial", "pyserial-asyncio"], check=True)
    if installed_version(venv) != VERSION:
        raise RuntimeError(f"thingsboard-gateway {VERSION} did not install into {venv}")
    return venv


def _slave(site: Site, device: int, port: int, per_point: bool) -> dict[str, object]:
    if per_point:
        series = [{"tag": f"r{2 * i}", "type": "32uint", "functionCode": 4, "objectsCount": 2,
                   "address": 2 * i} for i in range(site.points)]
    else:  # one request for the whole block, as our plan makes: the same Modbus traffic
        series = [{"tag": "r${address}", "type": "32uint", "functionCode": 4, "objectsCount": 2,
                   "address": f"0-{2 * site.points - 1}", "maxRegistersPerRequest": 125}]
    return {
        "host": "127.0.0.1", "port": port, "type": "tcp", "method": "socket", "unitId": 1,
        "deviceName": site.device(device), "deviceType": "default",
        "timeout": 1, "retries": 0, "byteOrder": "BIG", "wordOrder": "BIG",
        "pollPeriod": round(site.poll_s * 1000), "connectAttemptTimeMs": 500,
        "connectAttemptCount": 2, "waitAfterFailedAttemptsMs": 30000,
        "attributes": [], "timeseries": series, "attributeUpdates": [], "rpc": [],
    }  # fmt: skip


def _gateway(site: Site, broker_port: int, data: Path) -> dict[str, object]:
    return {
        "thingsboard": {
            "host": "127.0.0.1", "port": broker_port, "remoteShell": False,
            "remoteConfiguration": False, "latencyDebugMode": False,
            "statistics": {"enable": False, "statsSendPeriodInSeconds": 3600,
                           "customStatsSendPeriodInSeconds": 3600},
            "deviceFiltering": {"enable": False, "filterFile": "list.json"},
            "maxPayloadSizeBytes": 8196, "minPackSendDelayMS": 50, "minPackSizeToSend": 500,
            "checkConnectorsConfigurationInSeconds": 60, "handleDeviceRenaming": True,
            "security": {"type": "accessToken", "accessToken": TOKEN},
            "qos": 1,
            "reportStrategy": {"type": "ON_RECEIVED"},
            "checkingDeviceActivity": {"checkDeviceInactivity": False,
                                       "inactivityTimeoutSeconds": 300,
                                       "inactivityCheckPeriodSeconds": 10},
        },
        "storage": {"type": "sqlite", "data_file_path": f"{data}/",
                    "messages_ttl_check_in_hours": 1, "messages_ttl_in_days": 7,
                    "max_read_records_count": 1000},
        "grpc": {"enabled": False},
        "connectors": [{"type": "modbus", "name": "Modbus", "configuration": "modbus.json"}],
    }  # fmt: skip


def _logs(level: str = "WARNING") -> dict[str, object]:
    """The peer's own loggers at WARNING to stdout, as ours logs by default; root at ERROR, as
    in the peer's shipped logs.json (pymodbus 3.9 warns at every decode otherwise)."""
    names = ("database", "service", "connector", "converter", "tb_connection", "storage",
             "extension")
    handler = {"class": "logging.StreamHandler", "formatter": "f", "stream": "ext://sys.stdout"}
    return {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"f": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
        "handlers": {"console": handler},
        "loggers": {n: {"handlers": ["console"], "level": level, "propagate": False}
                    for n in names},
        "root": {"level": "ERROR", "handlers": ["console"]},
    }  # fmt: skip


def write_config(work: Path, site: Site, broker_port: int, sim_ports: list[int],
                 per_point: bool = False) -> Path:
    """Write tb_gateway.json, modbus.json and logs.json under ``work/config``; returns it."""
    conf = work / "config"
    conf.mkdir(parents=True, exist_ok=True)
    (work / "logs").mkdir(exist_ok=True)  # the peer does not create it, and fails without it
    (work / "data").mkdir(exist_ok=True)
    modbus = {"name": "Modbus", "logLevel": "WARNING",
              "master": {"slaves": [_slave(site, d, p, per_point)
                                    for d, p in enumerate(sim_ports)]}}
    files = {"tb_gateway.json": _gateway(site, broker_port, work / "data"),
             "modbus.json": modbus, "logs.json": _logs()}
    for name, body in files.items():
        (conf / name).write_text(json.dumps(body, indent=1))
    return conf


def command(venv: Path) -> list[str]:
    """The command that starts the peer (run it with TB_GW_CONFIG_DIR set, cwd = work)."""
    return [str(venv / "bin" / "thingsboard-gateway")]


class Peer:
    """The peer gateway; its "backend" is the broker's PUBACK, so there is nothing to start."""

    kind = "peer"
    dev = "thingsboard-gateway"

    def __init__(self, work: Path, venv: Path = DEFAULT_VENV, per_point: bool = False) -> None:
        self.work, self.venv, self.per_point = work, venv, per_point
        self.audit = False  # the peer has no record of what it committed to its storage

    def gateway(self, site: Site, uplink_port: int, sim_ports: list[int]) -> Gateway:
        conf = write_config(self.work, site, uplink_port, sim_ports, self.per_point)
        env = {**os.environ, "TB_GW_CONFIG_DIR": str(conf)}
        env.pop("PYTHONPATH", None)
        return Gateway(command(self.venv), self.work, env, self.work / "gateway.log")

    def committed(self) -> list[tuple[str, int]] | None:
        return None

    async def start_backend(self, broker_port: int) -> None:
        return None

    async def stop_backend(self) -> None:
        return None
