"""Scenario 2: polling every device, every point reaching the backend with good quality."""

from __future__ import annotations

import csv
import io

from hil_tests.gateway import Gateway, cimedge, until


def stored(gw: Gateway, since: float | None = None) -> list[dict[str, str]]:
    """The readings the backend stored for this gateway (`cimedge receiver export`)."""
    args = ["receiver", "export", "--db", gw.state.with_name("receiver.sqlite"), "--dev", gw.dev]
    if since is not None:
        args += ["--since", f"{since:.3f}"]
    out = cimedge(*args)
    assert out.returncode == 0, out.stderr
    return list(csv.DictReader(io.StringIO(out.stdout)))


def point_of(row: dict[str, str]) -> str:
    return row["name"].split(":", 1)[-1]


def latest(gw: Gateway, since: float | None) -> dict[str, dict[str, str]]:
    """Each point's newest stored reading (since ``since``)."""
    return {point_of(r): r for r in stored(gw, since)}


def test_every_device_is_polled_and_every_point_arrives(gateway: Gateway) -> None:
    """Each configured point of every device arrives at the backend with good quality."""
    configured = set(gateway.points())
    missing: set[str] = set()

    def all_good() -> bool:
        # Report by exception: a point that does not change is sent once, then every
        # max_interval_s, so look at everything stored, not only what came since now.
        missing.clear()
        missing.update(configured - {p for p, r in latest(gateway, None).items()
                                     if r["quality"] == "good"})
        return not missing
    try:
        until(all_good, 30, "a good reading of every configured point at the backend")
    except AssertionError as e:
        raise AssertionError(f"{e}; never good: {sorted(missing)}") from None
    assert set(gateway.devices().values()) == {"ok"}
    if gateway.rig.spec.kind == "sim":  # the simulators' register maps are known exactly
        last = latest(gateway, None)
        for name, meter in gateway.rig.spec.meters.items():
            assert float(last[f"{name}.voltage"]["value"]) == meter.unit * 1000 + 3
        for name, node in gateway.rig.spec.nodes.items():
            assert float(last[f"{name}.fw_major"]["value"]) >= 1
            assert float(last[f"{name}.channels"]["value"]) == node.channels
    assert gateway.received().get("rejects", {}) == {}
