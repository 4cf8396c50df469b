"""Random interleavings of append, batch, publish, ack, crash and restart lose nothing.

A model receiver stores each seq's rows once (as the real one does per (dev, seq)); a crash
forgets everything in memory (what was in flight), and the restarted store must hand the
same bytes out again. At the end, every committed reading was received exactly once, or
was evicted and counted in a gap event.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from pathlib import Path

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from cimedge.edge.model import Reading
from cimedge.edge.store import Store


def make(seq: int, rows: list) -> bytes:
    return json.dumps([seq, [[r.point, r.ts_ns] for r in rows]]).encode()


class StoreMachine(RuleBasedStateMachine):
    @initialize(quota=st.sampled_from([0, 56_000, 56_000]))
    def open(self, quota: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.dir = tempfile.TemporaryDirectory()
        self.path = Path(self.dir.name) / "b.sqlite"
        self.quota = quota
        self.store = self._run(Store(self.path, quota).__aenter__())
        self.committed: list[tuple[str, int]] = []
        self.received: dict[int, bytes] = {}  # the model receiver: seq -> bytes, stored once
        self.published: dict[int, bytes] = {}  # what went on the wire and is not yet acked
        self.tick = 0

    def _run(self, coro):  # noqa: ANN001, ANN202
        return self.loop.run_until_complete(coro)

    @rule(n=st.integers(1, 120))
    def append(self, n: int) -> None:
        self.tick += 1
        rows = [Reading(f"d.p{i % 7}", 1_760_000_000 * 10**9 + self.tick * 1000 + i, float(i))
                for i in range(n)]
        self._run(self.store.append(rows))
        self.committed += [(r.point, r.ts_ns) for r in rows]

    @rule(limit=st.integers(1, 80), lane=st.sampled_from(["oldest", "newest"]))
    def publish_new(self, limit: int, lane: str) -> None:
        b = self._run(self.store.build_batch("batch", limit, make, 0, lane=lane))
        if b is not None:
            assert b.seq not in self.published and b.seq not in self.received, "seq reused"
            self.published[b.seq] = b.payload

    @rule()
    def split(self) -> None:
        self._run(self.store.split_live())

    @rule(data=st.data())
    @precondition(lambda self: self.published)
    def deliver_and_ack(self, data: st.DataObject) -> None:
        seq = data.draw(st.sampled_from(sorted(self.published)))
        payload = self.published.pop(seq)
        if seq in self.received:
            assert self.received[seq] == payload, "a resend must be byte-identical"
        self.received[seq] = payload
        if data.draw(st.booleans()):  # the ack may be lost on the way back
            self._run(self.store.mark_acked(seq))

    @rule()
    def resend_pending(self) -> None:
        for b in self._run(self.store.pending(frozenset(), 1000)):
            if b.seq in self.received:
                assert self.received[b.seq] == b.payload, "resend differs from what was stored"
            self.published[b.seq] = b.payload

    @rule()
    def crash_and_restart(self) -> None:
        self._run(self.store.__aexit__(None, None, None))
        self.published.clear()  # whatever was in flight is forgotten
        self.store = self._run(Store(self.path, self.quota).__aenter__())

    @invariant()
    def depth_is_exact(self) -> None:
        if hasattr(self, "store"):
            d = self._run(self.store.depth())
            assert d.readings >= 0

    def teardown(self) -> None:
        if not hasattr(self, "store"):
            return
        # drain: resend what is pending, batch the rest, deliver and ack all of it
        for _ in range(10_000):
            pending = self._run(self.store.pending(frozenset(), 1000))
            if not pending:
                b = self._run(self.store.build_batch("batch", 500, make, 0))
                if b is None:
                    break
                pending = [b]
            for b in pending:
                if b.seq in self.received:
                    assert self.received[b.seq] == b.payload
                self.received[b.seq] = b.payload
                self._run(self.store.mark_acked(b.seq))
        gaps: list = []
        self._run(self.store.build_batch("event", 10**6, lambda s, rows: gaps.extend(rows) or b"e",
                                         0))
        depth = self._run(self.store.depth())
        self._run(self.store.__aexit__(None, None, None))
        self.loop.close()
        self.dir.cleanup()
        got = [tuple(x) for seq in sorted(self.received)
               for x in json.loads(self.received[seq])[1]]
        assert len(got) == len(set(got)), "no reading delivered twice"
        assert set(got) <= set(self.committed)
        evicted = sum(int(e.value) for e in gaps if e.kind == "gap")
        event(f"evicted: {evicted > 0}, crash+resend: {bool(self.received)}")
        assert evicted == depth.evicted
        assert len(got) + evicted == len(self.committed), "every committed reading accounted for"
        assert depth.readings == 0


StoreMachine.TestCase.settings = settings(max_examples=int(os.environ.get("CIMEDGE_PROPERTY_EXAMPLES", "120")),
                                              stateful_step_count=40, deadline=None)
TestStoreInterleavings = StoreMachine.TestCase
