"""Signed acks end to end (DESIGN 4a, issue 12): real Mosquitto, `cimedge run`, `cimedge receiver run`.

The gateway runs contract 2 with the audit table on, polling the counting simulator, so
every value is unique and "lost" is exact: committed by the gateway, never stored by the
receiver. Processes and the attacker come from tools/ackrig.py (bench/forged_acks.py
makes the figure in bench/RESULTS.md from the same code).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.forged_acks import run
from cimedge.tools.ackrig import EXPECTED_KIND, AckRig, kid_of, wait
from cimedge.tools.broker import mosquitto_binary

pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")


def test_forged_acks_of_every_kind_delete_nothing(tmp_path: Path) -> None:
    """Receiver down; every seq the gateway sends gets ok:true acks in every forged shape,
    including those only a holder of backend keys could make (another device's ack, the
    wrong signature prefix, an ended ingest key). Each is counted by kind, none deletes a
    batch, and once the receiver is up every committed value is stored once."""
    r = run(tmp_path, contract=2, outage=None, min_forged=100, backend_key=True,
            drain_timeout=60)
    shapes = r["forged_by_shape"]
    assert set(shapes) == set(EXPECTED_KIND), shapes  # every variant was sent
    expected: dict[str, int] = {}
    for shape, n in shapes.items():
        expected[EXPECTED_KIND[shape]] = expected.get(EXPECTED_KIND[shape], 0) + n
    assert r["forged_counted"] == expected
    assert r["acked_during_outage"] == 0 and r["unacked_after_outage"] > 0
    assert r["committed"] > 0
    assert (r["lost"], r["duplicated"], r["unacked_at_end"]) == (0, 0, 0), r


def test_an_ingest_key_rollover_loses_nothing(tmp_path: Path) -> None:
    """The receiver restarts with a new ingest key before the gateway has the new
    backend.json: its acks are refused (unknown_key) and the batches kept; once the file
    is installed the resends are acked. Then the old key is removed. Nothing lost."""
    rig = AckRig(tmp_path, contract=2)
    try:
        rig.start()
        rig.start_receiver("ingest-a")
        wait(lambda: rig.sync().get("acked", 0) >= 3, 30, "acks signed with the first key")
        rig.keygen("ingest-b")  # the operator's backend.json now lists both keys
        rig.stop("receiver")
        rig.start_receiver("ingest-b", name="receiver-b")
        wait(lambda: (rig.sync().get("refused_acks") or {}).get("unknown_key", 0) >= 2, 30,
             "the gateway to refuse acks by a key it does not know yet")
        acked = rig.sync()["acked"]
        assert rig.unacked() > 0
        rig.install()  # the new backend.json reaches the gateway, which is running
        wait(lambda: rig.sync().get("acked", 0) >= acked + 3, 30,
             "the resends to be acked with the new key")
        rig.remove("ingest-a")
        rig.install()
        old = kid_of(tmp_path / "ingest-a.key").hex()
        wait(lambda: old not in (rig.status().get("backend") or {}).get("keys", old), 30,
             "the gateway to drop the old key")
        acked = rig.sync()["acked"]
        wait(lambda: rig.sync().get("acked", 0) >= acked + 3, 30, "acks after the removal")
        rig.stop("sim")
        wait(rig.drained, 60, "every committed value to be stored and acked")
        tally = rig.tally()
        refused = rig.sync().get("refused_acks") or {}
        shown = rig.cli("status", "--state-dir", rig.gw)
    finally:
        rig.close()
    assert tally["committed"] > 0
    assert (tally["lost"], tally["duplicated"]) == (0, 0), tally
    assert set(refused) == {"unknown_key"}, refused
    n = refused["unknown_key"]
    assert f"acks        signed (v2): refused {n} (unknown_key {n}), changed nothing\n" in shown
    assert f"backend     ingest {kid_of(tmp_path / 'ingest-b.key').hex()}; operations none\n" \
        in shown
