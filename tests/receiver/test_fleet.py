"""tools/fleet.py: gateways with their own keys and seqs, whose batches the receiver accepts."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from cimedge.cloud_sync.receiver.registry import Registry
from cimedge.cloud_sync.verify import verify_message
from cimedge.tools.fleet import SITES, Fleet


def test_fleet_batches_verify_against_its_own_enrollments(tmp_path: Path) -> None:
    fleet = Fleet(8, seed="t")
    fleet.enroll(tmp_path / "registry.sqlite")
    registry = Registry(tmp_path / "registry.sqlite", readonly=True)
    messages = fleet.build(batches=2, readings=50)
    assert [(m.dev, m.seq) for m in messages[:9]] == [
        *((g.dev, 1) for g in fleet.gateways), (fleet.gateways[0].dev, 2)]
    assert Counter(g.site_type for g in fleet.gateways) == dict.fromkeys(SITES, 2)
    assert len({k.kid for k in registry.list()}) == 8
    for m in messages:
        v = verify_message(m.dev, "batch", m.payload, registry.lookup, now=time.time())
        assert (v.dev, v.seq, len(v.records)) == (m.dev, m.seq, 50)
        points = {p[0] for p in SITES[fleet.gateways[int(m.dev[3:])].site_type][1]}
        assert {r.name.split(":", 1)[1] for r in v.records} <= points
    registry.close()
    again = Fleet(8, seed="t").gateways[3]
    assert again.enrollment() == fleet.gateways[3].enrollment()  # keys follow the seed
    assert Fleet(8, seed="u").gateways[3].enrollment() != again.enrollment()
