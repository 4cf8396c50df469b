"""The table: per metric, each gateway's median [min-max] over rounds and the ratio per pair."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

# (scenario, key, label, better): better is "lower", "higher" or "" (shown, not compared)
ROWS: tuple[tuple[str, str, str, str], ...] = (
    ("steady", "values_per_s", "values delivered per s", "higher"),
    ("steady", "cpu_s_per_m", "CPU-s per million values", "lower"),
    ("steady", "cpu_share", "CPU share of one core", "lower"),
    ("steady", "peak_rss_mb", "peak RSS, MB", "lower"),
    ("steady", "bytes_per_value", "bytes/value (payload+topic)", "lower"),
    ("steady", "wire_bytes_per_value", "bytes/value (TCP, both ways)", "lower"),
    ("steady", "latency_p50_s", "latency p50, s", "lower"),
    ("steady", "startup_s", "start to first value, s", "lower"),
    ("steady", "lost", "values lost", "lower"),
    ("saturation", "poll_s", "best poll period, s", ""),
    ("saturation", "values_per_s", "values delivered per s", "higher"),
    ("saturation", "delivered_share", "share of polled values delivered", "higher"),
    ("saturation", "cpu_s_per_m", "CPU-s per million values", "lower"),
    ("saturation", "cpu_share", "CPU share of one core", ""),  # more work, not worse
    ("saturation", "peak_rss_mb", "peak RSS, MB", "lower"),
    ("saturation", "bytes_per_value", "bytes/value (payload+topic)", "lower"),
    ("saturation", "wire_bytes_per_value", "bytes/value (TCP, both ways)", "lower"),
    ("equal load", "values_per_s", "values delivered per s (poll 0.1 s)", "higher"),
    ("equal load", "cpu_s_per_m", "CPU-s per million values", "lower"),
    ("equal load", "bytes_per_value", "bytes/value (payload+topic)", "lower"),
    ("outage", "backlog", "backlog at broker return, values", ""),
    ("outage", "first_after_s", "broker back -> first backlog value, s", "lower"),
    ("outage", "drain_s", "broker back -> backlog drained, s", "lower"),
    ("outage", "lost_backlog", "backlog values lost", "lower"),
    ("outage", "dups", "duplicates on the wire", "lower"),
    ("outage", "peak_rss_mb", "peak RSS, MB", "lower"),
    ("kill", "backlog", "backlog at broker return, values", ""),
    ("kill", "lost_at_kill", "values lost (served before the kill)", "lower"),
    ("kill", "lost_older_1s", "  of them served >= 1 s before it", "lower"),
    ("kill", "lost_backlog", "  of them from the backlog", "lower"),
    ("kill", "lost_committed", "  of them committed (ours: audit table)", ""),
    ("kill", "dups", "duplicates on the wire", "lower"),
    ("kill", "out_of_order", "values out of order", "lower"),
    ("kill", "receiver_dups", "duplicates stored by our receiver", ""),
)

SIDES = ("ours", "peer")


def equal_load(results: Sequence[dict[str, Any]], poll: float = 0.1) -> list[dict[str, Any]]:
    """The ladder rung at ``poll`` of every saturation result, as scenario "equal load"."""
    out = []
    for r in results:
        if r["scenario"] == "saturation":
            out += [{**rung, "round": r["round"], "gateway": r["gateway"],
                     "scenario": "equal load"} for rung in r.get("ladder", ())
                    if abs(rung["poll_s"] - poll) < 1e-9]
    return out


def _values(results: Sequence[dict[str, Any]], scen: str, key: str, side: str) -> dict[int, float]:
    return {r["round"]: r[key] for r in results
            if r["scenario"] == scen and r["gateway"] == side and r.get(key) is not None}


def _num(x: float) -> str:
    if x == 0:
        return "0"
    if abs(x) >= 100:  # noqa: PLR2004
        return f"{x:,.0f}"
    return f"{x:.3g}" if abs(x) < 10 else f"{x:.1f}"  # noqa: PLR2004


def _spread(xs: Sequence[float]) -> str:
    if not xs:
        return "-"
    med = _num(statistics.median(xs))
    return med if len(xs) == 1 or min(xs) == max(xs) else f"{med} [{_num(min(xs))}-{_num(max(xs))}]"


def _ratio(ours: float, peer: float, better: str) -> float | None:
    """How many times better ours is (> 1: ours better), or None when it has no meaning."""
    num, den = (peer, ours) if better == "lower" else (ours, peer)
    if den == 0:
        return None if num == 0 else float("inf")
    return num / den


def ratios(results: Sequence[dict[str, Any]], scen: str, key: str, better: str) -> list[float]:
    """The ratio of each round's pair (ours and the peer in the same round)."""
    ours, peer = (_values(results, scen, key, s) for s in SIDES)
    out = [_ratio(ours[r], peer[r], better) for r in sorted(ours.keys() & peer.keys())]
    return [x for x in out if x is not None]


def _ratio_text(xs: list[float]) -> str:
    if not xs:
        return "-"
    if all(x == float("inf") for x in xs):
        return "ours 0"
    if all(x == 0 for x in xs):
        return "peer 0"
    finite = [x for x in xs if x != float("inf")]
    return "x" + _spread(finite) + (" (+ours 0)" if len(finite) < len(xs) else "")


def table(results: Sequence[dict[str, Any]]) -> str:
    """The whole table as text, one section per scenario."""
    results = [*results, *equal_load(results)]
    head = f"{'metric':<42} {'ours':>24} {'peer':>24} {'ours better by':>22}"
    lines, last = [], ""
    for scen, key, label, better in ROWS:
        ours, peer = (list(_values(results, scen, key, s).values()) for s in SIDES)
        if not ours and not peer:
            continue
        if scen != last:
            lines += ["", f"== {scen}", head]
            last = scen
        ratio = _ratio_text(ratios(results, scen, key, better)) if better else ""
        lines.append(f"{label:<42} {_spread(ours):>24} {_spread(peer):>24} {ratio:>22}")
    return "\n".join(lines[1:])


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def targets(results: Sequence[dict[str, Any]]) -> list[str]:
    """The issue's four targets, each with its numbers and "met" or "NOT met"."""
    out = []
    for scen in ("steady", "saturation"):
        cpu = _median(ratios(results, scen, "cpu_s_per_m", "lower"))
        if cpu is not None:
            out.append(f"CPU-s per million values ({scen}): peer/ours = {cpu:.1f}x "
                       f"(target >= 5x: {'met' if cpu >= 5 else 'NOT met'})")  # noqa: PLR2004
    for scen in ("steady", "saturation"):
        b = _median(ratios(results, scen, "bytes_per_value", "lower"))
        if b is not None:
            out.append(f"bytes per value ({scen}): peer/ours = {b:.2f}x "
                       f"(target >= 5x: {'met' if b >= 5 else 'NOT met'})")  # noqa: PLR2004
    rss = [x for s in ("steady", "saturation", "outage", "kill")
           for x in ratios(results, s, "peak_rss_mb", "lower")]
    if rss:
        out.append(f"peak RSS: peer/ours = {min(rss):.2f}-{max(rss):.2f}x over every pair "
                   f"(target: lower: {'met' if min(rss) > 1 else 'NOT met'})")
    ours, peer = (list(_values(results, "kill", "lost_at_kill", s).values()) for s in SIDES)
    if ours and peer:
        met = max(ours) == 0 and max(peer) > 0
        out.append(f"values lost on SIGKILL during the drain: ours {_spread(ours)}, peer "
                   f"{_spread(peer)} (target: zero where the peer loses any: "
                   f"{'met' if met else 'NOT met' if max(peer) > 0 else 'peer lost none'})")
    committed = list(_values(results, "kill", "lost_committed", "ours").values())
    if committed:
        out.append(f"  of ours, committed to the buffer before the kill: {_spread(committed)} "
                   f"(the rest were answered by the device and not yet committed)")
    return out


RAW = ("values_per_s", "cpu_s_per_m", "cpu_share", "peak_rss_mb", "bytes_per_value",
       "wire_bytes_per_value", "latency_p50_s", "startup_s", "backlog", "first_after_s",
       "drain_s", "lost", "lost_backlog", "lost_at_kill", "lost_older_1s", "dups",
       "out_of_order", "receiver_dups", "load_start")


def raw_markdown(results: Sequence[dict[str, Any]]) -> str:
    """Every run (and every saturation rung) as one row of a Markdown table."""
    rows = []
    for r in results:
        rungs = r.get("ladder") or [r]
        rows += [{**rung, "round": r["round"], "scenario": r["scenario"],
                  "gateway": r["gateway"]} for rung in rungs]
    cols = [c for c in RAW if any(row.get(c) is not None for row in rows)]
    lines = ["| round | scenario | gateway | poll s | " + " | ".join(cols) + " |",
             "|---" * (4 + len(cols)) + "|"]
    for row in rows:
        cells = [_num(row[c]) if isinstance(row.get(c), int | float) else "-" for c in cols]
        lines.append(f"| {row['round']} | {row['scenario']} | {row['gateway']} | "
                     f"{row['poll_s']:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.compare.report results.json``: the targets, table and raw rows again."""
    import argparse  # noqa: PLC0415 - only for this entry point
    import json  # noqa: PLC0415

    p = argparse.ArgumentParser(prog="python -m bench.compare.report", description=main.__doc__)
    p.add_argument("results", help="results.json from a run of python -m bench.compare")
    with open(p.parse_args(argv).results) as f:  # noqa: PTH123
        results = json.load(f)
    print("\n".join(targets(results)) + "\n")  # noqa: T201
    print(table(results) + "\n")  # noqa: T201
    print(raw_markdown(results))  # noqa: T201


if __name__ == "__main__":
    main()
