"""A short Markdown summary per run, beside the JUnit XML: each scenario, its result and time."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import pytest

from hil_tests.rig import RigSpec

SPEC = pytest.StashKey[RigSpec]()
DIR = pytest.StashKey[Path]()


class Summary:
    """Collects each scenario's outcome and duration (setup, call and teardown together)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.rows: dict[str, dict[str, Any]] = {}
        self.t0 = time.monotonic()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        row = self.rows.setdefault(report.nodeid, {"outcome": "passed", "s": 0.0, "note": "",
                                                   "doc": ""})
        row["s"] = float(row["s"]) + report.duration
        if report.when == "call" and report.passed:
            row["outcome"] = "passed"
        elif report.skipped:
            row["outcome"] = "skipped"
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else ""
            row["note"] = str(reason).removeprefix("Skipped: ")
        elif report.failed:
            row["outcome"] = "failed" if report.when == "call" else "error"
            lines = report.longreprtext.strip().splitlines() or [""]
            errors = [ln[1:].strip() for ln in lines if ln.startswith("E ")]
            row["note"] = (errors[0] if errors else lines[-1])[:200]

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            doc = (getattr(item, "function", None).__doc__ or "").strip().split("\n")[0] \
                if getattr(item, "function", None) else ""
            self.rows.setdefault(item.nodeid, {"outcome": "not run", "s": 0.0, "note": "",
                                               "doc": doc})["doc"] = doc

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        spec, out = self.config.stash[SPEC], self.config.stash[DIR]
        out.mkdir(parents=True, exist_ok=True)
        counts: dict[str, int] = {}
        lines = [f"# HIL run on rig `{spec.name}` ({spec.kind})", "",
                 f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC, rig file `{spec.file}`, "
                 f"site type {spec.site.type}, {time.monotonic() - self.t0:.1f} s in all", "",
                 "| scenario | result | time | note |", "|---|---|---:|---|"]
        for nodeid, r in self.rows.items():
            counts[str(r["outcome"])] = counts.get(str(r["outcome"]), 0) + 1
            name = nodeid.split("::")[-1]
            note = str(r["note"] or r["doc"]).replace("|", "\\|")
            lines.append(f"| {name} | {r['outcome']} | {float(r['s']):.1f} s | {note} |")
        lines += ["", ", ".join(f"{n} {k}" for k, n in sorted(counts.items())),
                  f"JUnit XML: `{self.config.option.xmlpath}`", ""]
        (out / "summary.md").write_text("\n".join(lines))

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        terminalreporter.write_line(f"HIL report: {self.config.stash[DIR] / 'summary.md'}")
