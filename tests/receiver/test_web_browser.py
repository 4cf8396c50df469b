"""The web view in a real browser (Debian's headless Chromium, driven by Selenium through
Debian's chromedriver) over real processes: Mosquitto, the pump-station simulator, `cimedge
receiver run --http` and `cimedge run`. Log in with the one-time password, see the gateway
online, open its chart, acknowledge its alarm, kill the gateway and see it go offline.

Screenshots are saved in the test's tmp dir (the paths are printed: pytest -s shows them).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

webdriver = pytest.importorskip("selenium.webdriver",
                                reason="selenium is not installed (pip install -e .[test])")
pytest.importorskip("starlette", reason="the web extra is not installed (pip install -e .[test])")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from cimedge.provisioning.demo import DEVICE_ID, site_toml  # noqa: E402
from cimedge.provisioning.identity import ensure_identity  # noqa: E402
from cimedge.tools.broker import Mosquitto  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or (
    "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="Debian's chromium and chromium-driver are not installed (scripts/bootstrap "
           "installs them with apt-get where it can)")
ROOT = Path(__file__).parents[2]
NEW_PASSWORD = "night shift pump 42"


class Proc:
    """A `cimedge` or simulator subprocess whose stdout lines are collected as they come."""

    def __init__(self, log: Path, *args: str) -> None:
        self.lines: list[str] = []
        self.log = log
        self.proc = subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, text=True,
                                     stdout=subprocess.PIPE, stderr=open(log, "ab"),  # noqa: SIM115
                                     stdin=subprocess.DEVNULL,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)})
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def line(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        def found() -> re.Match[str] | None:
            if self.proc.poll() is not None and not self.lines:
                raise AssertionError(f"{self.proc.args} exited: {self.log.read_text()[-2000:]}")
            return next((m for m in map(re.compile(pattern).search, list(self.lines)) if m), None)
        return wait_until(found, timeout, f"{pattern!r} from {self.proc.args[2]}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def wait_until(cond: Callable[[], Any], timeout: float, what: str) -> Any:  # noqa: ANN401
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if got := cond():
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def cli(*args: str | Path) -> str:
    out = subprocess.run([sys.executable, "-m", "cimedge.provisioning.cli", *map(str, args)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM  # type: ignore[assignment]
    profile = tempfile.mkdtemp(prefix="chromium-", dir=tmp_path)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}", "--window-size=1400,1000"):
        options.add_argument(flag)
    # Debian's chromedriver, named: Selenium Manager then never looks for (or fetches) one.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def test_operator_logs_in_sees_a_gateway_acks_its_alarm_and_sees_it_go_offline(
        tmp_path: Path, broker: Mosquitto, browser: Any) -> None:  # noqa: ANN401
    started = time.monotonic()

    def lap(what: str) -> None:
        print(f"{time.monotonic() - started:6.1f} s  {what}")  # noqa: T201

    shots = tmp_path / "screenshots"
    shots.mkdir()

    def shot(name: str) -> None:
        path = shots / f"{name}.png"
        assert browser.save_screenshot(str(path)), name
        print(f"screenshot: {path}")  # noqa: T201 - the artifact's path, for the reader
        lap(name)

    sim = Proc(tmp_path / "sim.log", "cimedge.tools.sim.pump_station", "--port", "0",
               "--speed", "20")
    gateway: Proc | None = None
    receiver: Proc | None = None
    try:
        sim_port = int(sim.line(r"listening 127\.0\.0\.1:(\d+)").group(1))
        _, enrollment = ensure_identity(tmp_path / "gw", DEVICE_ID, "pump_station")
        db = tmp_path / "rx.sqlite"
        cli("registry", "add", enrollment, "--db", db)
        otp = cli("receiver", "user", "add", "alice", "--role", "operator",
                  "--db", db).splitlines()[-1]
        token = cli("receiver", "token", "prometheus", "--role", "read-only",
                    "--db", db).splitlines()[-1]
        receiver = Proc(tmp_path / "receiver.log", "cimedge.provisioning.cli", "receiver", "run",
                        "--broker", broker.url, "--db", str(db), "--http", "127.0.0.1:0")
        url = receiver.line(r"web ready: (http://127\.0\.0\.1:\d+/)").group(1)
        receiver.line(r"receiver .* ready")
        (tmp_path / "gw" / "site.toml").write_text(
            site_toml(broker.url, sim_port, poll=0.2, flush=0.3, ack_timeout=2.0))
        gateway = Proc(tmp_path / "gateway.log", "cimedge.provisioning.cli", "run",
                       "--config", str(tmp_path / "gw" / "site.toml"))
        wait = WebDriverWait(browser, 40, poll_frequency=0.1)

        # Log in: the one-time password must be replaced at once.
        browser.get(url + "gateway/" + DEVICE_ID)
        wait.until(lambda d: d.current_url.endswith("/login"))
        browser.find_element(By.ID, "user").send_keys("alice")
        browser.find_element(By.ID, "password").send_keys(otp)
        browser.find_element(By.ID, "submit").click()
        wait.until(lambda d: d.find_element(By.ID, "new_password").is_displayed())
        shot("1-one-time-password")
        browser.find_element(By.ID, "new_password").send_keys(NEW_PASSWORD)
        browser.find_element(By.ID, "submit").click()

        # The fleet: the gateway comes online.
        row = f'#fleet tr[data-dev="{DEVICE_ID}"]'
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f'{row}[data-state="online"]'))
        assert browser.find_element(By.CSS_SELECTOR, ".who").text.startswith("alice (operator)")
        shot("2-fleet-online")

        # Its chart: the wet-well level, drawn from the server's buckets.
        browser.find_element(By.CSS_SELECTOR, f"{row} a").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#point option"))
        browser.find_element(By.CSS_SELECTOR, '#point option[value="ps1.level"]').click()
        chart = wait.until(lambda d: d.find_element(By.CSS_SELECTOR,
                                                    '#chart[data-state="drawn"]'
                                                    '[data-point="ps1.level"]'))
        assert int(chart.get_attribute("data-readings")) > 0
        assert browser.find_elements(By.CSS_SELECTOR, "#chart canvas")
        shot("3-gateway-chart")

        # Its alarm (the wet well rises past 3.5 m): acknowledge it on the alarms page.
        browser.find_element(By.LINK_TEXT, "Alarms").click()
        button = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#alarms button.ack"))
        key = button.get_attribute("data-key")
        shot("4-alarm-open")
        button.click()
        # The alarm may clear meanwhile (the pump starts): its raise keeps the acknowledgement.
        acked = wait.until(lambda d: d.find_element(By.CSS_SELECTOR,
                                                    f'td.acked[data-key="{key}"]'))
        assert acked.text.startswith("by alice at ")
        shot("5-alarm-acknowledged")

        # The receiver's metrics, as Prometheus would scrape them with its token.
        request = urllib.request.Request(url + "metrics",
                                         headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=10) as res:  # noqa: S310 - loopback
            metrics = res.read().decode()
        stored = re.search(r'^cim_receiver_messages_total\{outcome="stored"\} (\S+)', metrics,
                           re.MULTILINE)
        assert stored and float(stored.group(1)) > 0, metrics[:2000]
        assert re.search(r"^cim_receiver_ack_latency_seconds_count [1-9]", metrics,
                         re.MULTILINE)

        # The gateway's process dies (kill -9): the broker publishes its will and the row
        # turns offline. (A clean stop publishes the offline status itself: tested with the
        # gateway's own transport in test_receiver_status.py.)
        browser.find_element(By.LINK_TEXT, "Fleet").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f'{row}[data-state="online"]'))
        assert gateway.stop(signal.SIGKILL) == -signal.SIGKILL
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f'{row}[data-state="offline"]'))
        shot("6-fleet-offline")
        # No script error and no CSP violation (network refusals, such as the 403 asking
        # for a new password and the missing favicon, are the server's answers).
        logs = browser.get_log("browser")
        assert not [e for e in logs if e.get("level") == "SEVERE"
                    and e.get("source") != "network"], logs
    finally:
        for p in (gateway, receiver, sim):
            if p is not None:
                p.stop()
    assert (tmp_path / "gw" / "metrics" / "cimedge.prom").read_text().startswith("# HELP")
