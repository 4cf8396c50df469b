"""Forged acks during a receiver outage: how many values does a gateway lose?

    python -m bench.forged_acks [--outage 60] [--contract 2 1]

Real processes (tools/ackrig.py): a private Mosquitto, the counting pump-station simulator,
`cimedge run` (polling every 0.1 s, a batch every 0.2 s, resent after 1 s) and, after the
outage, `cimedge receiver run` with the backend's ingest key. During the outage a client
holding no backend key reads every batch the gateway sends and publishes an ``ok: true``
ack for its seq, in every shape it can make (the v1 map, the v2 map unsigned, a COSE_Sign1
under its own key with the right AAD and signature prefix, the same with the ingest key's
kid copied in, garbage). Then the receiver comes up, the simulator stops, and the run ends
when every value the gateway committed is stored (or after --drain-timeout). Prints, per
contract: values committed, stored, lost, duplicated; forged acks published and counted by
the gateway, by kind.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cimedge.tools.ackrig import AckRig, ForgedAcks, kid_of, wait


def run(work: Path, *, contract: int = 2, outage: float | None = 60.0,
        min_forged: int = 0, drain_timeout: float = 120.0,
        backend_key: bool = False) -> dict[str, Any]:
    """One run; ``backend_key`` also forges what only a holder of backend keys could (tests).

    The outage lasts ``outage`` seconds (the benchmark), or, with ``outage`` None, until
    the gateway has resent its batches twice and ``min_forged`` acks were forged (tests).
    """
    rig = AckRig(work, contract=contract)
    forger = None
    try:
        rig.start()
        keys: dict[str, Any] = {}
        if backend_key:
            from cimedge.cloud_sync import backend_keys as bk

            old = rig.keygen("ingest-old", not_after="2020-01-01T00:00:00Z")
            rig.install()
            keys = {"backend_key": bk.load_private_key(rig.work / "ingest-a.key"),
                    "expired_key": bk.load_private_key(old)}
        wait(lambda: rig.sync().get("sent", 0) >= 1, 30, "the gateway's first batch")
        forger = ForgedAcks(rig.broker.port, rig.status()["device_id"],
                            kid_of(rig.work / "ingest-a.key"), **keys)
        if outage is not None:
            time.sleep(outage)  # the benchmark's outage: its length, not a synchronisation
        else:
            wait(lambda: rig.sync().get("resent", 0) >= 4 and forger.total() >= min_forged,
                 60, f"{min_forged} forged acks and a round of resends")
        forger.close()
        published = forger.total()
        if contract == 2:  # noqa: PLR2004 - a v1 gateway counts nothing: it believes them
            wait(lambda: sum((rig.sync().get("refused_acks") or {}).values()) >= published,
                 30, f"the gateway to count {published} forged acks")
        during = {"acked": rig.sync().get("acked", 0), "unacked": rig.unacked()}
        refused = dict(rig.sync().get("refused_acks") or {})
        rig.start_receiver("ingest-a")
        acked = rig.sync().get("acked", 0)
        wait(lambda: rig.sync().get("acked", 0) >= acked + 4, 60, "acks with the receiver up")
        rig.stop("sim")  # from here the gateway drains what it holds
        try:
            # every committed value stored (v2), or nothing more held (v1: what a forged
            # ack deleted can never be stored)
            wait(lambda: rig.drained() or rig.emptied(), drain_timeout,
                 "the gateway to have delivered or dropped everything")
        except TimeoutError:
            pass  # reported below as unacked
        result = {"contract": contract, "outage_s": outage, **rig.tally(),
                  "unacked_at_end": rig.unacked(), "forged_published": published,
                  "forged_by_shape": dict(forger.published), "forged_counted": refused,
                  "acked_during_outage": during["acked"],
                  "unacked_after_outage": during["unacked"]}
    finally:
        if forger is not None:
            forger.close()
        rig.close()
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.forged_acks",
                                description=__doc__.split("\n")[0])
    p.add_argument("--outage", type=float, default=60.0, help="receiver outage, s")
    p.add_argument("--contract", type=int, nargs="+", default=[2, 1], choices=[1, 2])
    p.add_argument("--drain-timeout", type=float, default=120.0)
    p.add_argument("--work", type=Path, help="keep the run's files here")
    args = p.parse_args(argv)
    results = []
    for contract in args.contract:
        work = (args.work or Path(tempfile.mkdtemp(prefix="cimedge-forged-"))) / f"v{contract}"
        work.mkdir(parents=True, exist_ok=True)
        results.append(run(work, contract=contract, outage=args.outage,
                           drain_timeout=args.drain_timeout))
        print(json.dumps(results[-1]), flush=True)
    print(f"\n{'contract':<10}{'committed':>10}{'stored':>8}{'lost':>7}{'dup':>5}"
          f"{'forged':>8}{'counted':>9}  ")
    for r in results:
        print(f"v{r['contract']:<9}{r['committed']:>10}{r['stored']:>8}{r['lost']:>7}"
              f"{r['duplicated']:>5}{r['forged_published']:>8}"
              f"{sum(r['forged_counted'].values()):>9}  {r['forged_counted']}")
    return 0 if all(r["lost"] == 0 for r in results if r["contract"] == 2) else 1  # noqa: PLR2004


if __name__ == "__main__":
    sys.exit(main())
