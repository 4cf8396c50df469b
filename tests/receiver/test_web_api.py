"""The web view's API and pages over real HTTP: every endpoint, and every refusal (no login or
token, the wrong role, CSRF missing or wrong, a foreign origin or host)."""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette", reason="the web extra is not installed (pip install -e .[test])")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from webkit import Client, ServerThread, fill  # noqa: E402

from cimedge.cloud_sync.receiver.registry import Registry  # noqa: E402
from cimedge.cloud_sync.receiver.service import Receiver  # noqa: E402
from cimedge.cloud_sync.receiver.web.app import Web  # noqa: E402
from cimedge.cloud_sync.receiver.web.metrics import ReceiverMetrics  # noqa: E402
from cimedge.cloud_sync.receiver.web.serve import WebError, bind, make_app  # noqa: E402
from cimedge.cloud_sync.receiver.web.webstate import WebState, WebStateError  # noqa: E402
from cimedge.provisioning.cli import main as cimedge  # noqa: E402

PASSWORD = "correct horse battery"
GETS = ["/api/v1", "/api/v1/session", "/api/v1/fleet", "/api/v1/gateways/ps-0001",
        "/api/v1/gateways/ps-0001/series?point=well.level", "/api/v1/alarms", "/metrics"]


class Site:
    def __init__(self, tmp: Path) -> None:
        self.db, self.reg = tmp / "rx.sqlite", tmp / "registry.sqlite"
        self.devices = fill(self.db, self.reg)
        self.state = WebState(tmp / "web.sqlite")
        self.otp = {"alice": self.state.add_user("alice", "operator"),
                    "bob": self.state.add_user("bob", "read-only")}
        self.tokens = {"ro": self.state.add_token("prom", "read-only"),
                       "op": self.state.add_token("script", "operator")}
        registry = Registry(self.reg, readonly=True)
        self.receiver = Receiver("127.0.0.1", 1, tmp / "unused.sqlite", registry)
        self.receiver.metrics.update(stored=5, duplicates=1, readings=500)
        self.receiver.rejects["bad_signature"] += 2
        self.web = Web(str(self.db), str(self.reg), self.state,
                       metrics=ReceiverMetrics(self.receiver))
        self.sock = bind("127.0.0.1:0", tls=False, plaintext=False)
        self.server = ServerThread(make_app(self.web, self.sock), self.sock)
        self.receiver.ack_latency(0.004)  # type: ignore[misc]
        self.port = self.server.port

    def client(self) -> Client:
        return Client(self.port)

    def logged_in(self, user: str) -> Client:
        c = self.client()
        status, out = c.login(user, self.otp[user], PASSWORD + user)
        assert status == 200, out
        self.otp[user] = PASSWORD + user  # the one-time password is used up
        return c

    def bearer(self, which: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[which]}"}

    def close(self) -> None:
        self.server.stop()
        self.web.close()
        self.state.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    s = Site(tmp_path_factory.mktemp("web"))
    yield s
    s.close()


def test_nothing_without_authentication(site: Site) -> None:
    c = site.client()
    for path in GETS:
        status, headers, body = c.request("GET", path)
        assert (status, body["error"]) == (401, "unauthenticated"), path
        assert headers["cache-control"] == "no-store"
    for path in ("/", "/alarms", "/gateway/ps-0001"):
        status, headers, _ = c.request("GET", path)
        assert (status, headers["location"]) == (303, "/login"), path
    for path in ("/api/v1/alarms/ack", "/api/v1/logout"):
        assert c.request("POST", path, {})[0] == 401, path
    wrong = {"Authorization": "Bearer cimtok_not-a-token"}
    assert c.request("GET", "/api/v1/fleet", headers=wrong)[0] == 401
    assert c.request("GET", "/api/v1/fleet", headers={"Authorization": "Basic eDp5"})[0] == 401
    assert c.request("GET", "/api/v1/fleet", headers={"Cookie": "cim_session=forged"})[0] == 401


def test_login_needs_the_pages_csrf_token_and_a_new_password(site: Site) -> None:
    c = site.client()
    assert c.request("POST", "/api/v1/login", {"user": "bob", "password": "x"})[0] == 403
    status, headers, page = c.request("GET", "/login")
    assert status == 200 and "cim_prelogin" in c.cookies
    assert "HttpOnly" in headers["set-cookie"] and "SameSite=strict" in headers["set-cookie"]
    token = re.search(r'content="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    assert c.request("POST", "/api/v1/login", {"user": "bob", "password": "x"},
                     {"X-CSRF-Token": "wrong"})[0] == 403
    evil = {"X-CSRF-Token": token, "Origin": "http://evil.invalid"}
    assert c.request("POST", "/api/v1/login", {"user": "bob", "password": "x"}, evil)[0] == 403
    assert c.login("bob", "wrong password")[0] == 401
    status, out = c.login("bob", site.otp["bob"])
    assert (status, out["error"]) == (403, "password_change_required")
    assert "cim_session" not in c.cookies
    status, out = c.login("bob", site.otp["bob"], "short")
    assert (status, out["error"]) == (400, "weak_password")
    status, out = c.login("bob", site.otp["bob"], PASSWORD + "bob")
    assert (status, out["user"], out["role"]) == (200, "bob", "read-only")
    assert c.request("GET", "/api/v1/session")[2] == {"user": "bob", "role": "read-only",
                                                      "via": "session"}
    assert site.client().login("bob", site.otp["bob"], PASSWORD + "x")[0] == 401  # used up
    site.otp["bob"] = PASSWORD + "bob"
    again = site.client()
    assert again.login("bob", PASSWORD + "bob")[0] == 200


def test_password_guessing_is_throttled(site: Site) -> None:
    c = site.client()
    for _ in range(5):
        assert c.login("mallory", "guess")[0] == 401
    status, out = c.login("mallory", "guess")
    assert (status, out["error"]) == (429, "locked")


def test_security_headers_everywhere(site: Site) -> None:
    c = site.logged_in("alice")
    for path in ("/", "/api/v1/fleet", "/static/fleet.js", "/login", "/nowhere"):
        _, h, _ = c.request("GET", path)
        assert h["content-security-policy"].startswith("default-src 'none'; script-src 'self';")
        assert "frame-ancestors 'none'" in h["content-security-policy"]
        assert "unsafe-inline" not in h["content-security-policy"]
        assert (h["x-content-type-options"], h["referrer-policy"], h["x-frame-options"]) == (
            "nosniff", "no-referrer", "DENY"), path
        assert h["cache-control"] == ("no-cache" if path.startswith("/static/") else "no-store")
    _, h, js = c.request("GET", "/static/uplot/uPlot.iife.min.js")
    assert h["content-type"].startswith(("text/javascript", "application/javascript"))
    assert "uPlot" in js
    _, _, page = c.request("GET", "/")
    assert "<script>" not in page and ' style="' not in page and "onclick" not in page
    assert c.request("GET", "/", headers={"Host": "evil.invalid"})[0] == 400  # DNS rebinding


def test_fleet_gateway_series_and_alarms_read(site: Site) -> None:
    c = site.logged_in("bob")
    _, _, fleet = c.request("GET", "/api/v1/fleet")
    rows = {r["dev"]: r for r in fleet["gateways"]}
    assert [r["dev"] for r in fleet["gateways"]][0] == "ps-0003"  # silent first
    assert (rows["ps-0003"]["silent"], rows["ps-0003"]["silent_reason"]) == (
        True, "enrolled, never seen")
    assert (rows["ps-0001"]["state"], rows["ps-0001"]["sw"], rows["ps-0001"]["backlog"],
            rows["ps-0001"]["open_alarms"]) == ("online", "1.2.0", 12, 1)
    assert rows["ps-0002"]["state"] == "offline"
    assert [r["dev"] for r in c.request("GET", "/api/v1/fleet?state=offline")[2]["gateways"]] \
        == ["ps-0002"]
    assert [r["dev"] for r in c.request("GET", "/api/v1/fleet?state=silent")[2]["gateways"]] \
        == ["ps-0003"]
    assert c.request("GET", "/api/v1/fleet?site_type=lamp_pole")[2]["gateways"] == []
    status, _, gw = c.request("GET", "/api/v1/gateways/ps-0001")
    assert status == 200
    assert [(p["point"], p["unit"]) for p in gw["points"]] == [("well.level", "m")]
    assert gw["events"][0]["kind"] == "raise" and gw["messages"] == 2 and gw["gaps"] == []
    assert gw["open_alarms"][0]["rule"] == "high_level"
    assert c.request("GET", "/api/v1/gateways/ps-9999")[0] == 404
    assert c.request("GET", "/api/v1/gateways/NOT_A_DEV")[0] == 404
    now = time.time()
    status, _, s = c.request("GET", f"/api/v1/gateways/ps-0001/series?point=well.level"
                                    f"&since={now - 7200}&until={now}&width=120")
    assert status == 200 and s["readings"] == 3600 and len(s["t"]) <= 121
    assert min(s["min"]) == 1.0 and max(s["max"]) == pytest.approx(3.995)
    for q in ("point=well.level&since=x", "point=&width=10", "point=a&since=10&until=5",
              "point=a&width=0", "point=a&width=99999", "point=a&since=0&until=1e10",
              "point=a&until=nan"):
        assert c.request("GET", f"/api/v1/gateways/ps-0001/series?{q}")[0] == 400, q
    status, _, alarms = c.request("GET", "/api/v1/alarms")
    assert status == 200 and alarms["open"][0]["dev"] == "ps-0001"
    assert alarms["recent"][0]["kind"] == "raise"
    assert c.request("GET", "/api/v1")[2]["version"] == 1
    for page in ("/", "/alarms", "/gateway/ps-0001"):
        status, _, html = c.request("GET", page)
        assert status == 200 and f'content="{c.csrf}"' in html, page


def test_acknowledging_an_alarm_needs_the_operator_role_and_csrf(site: Site) -> None:
    _, _, alarms = site.client().request("GET", "/api/v1/alarms", headers=site.bearer("ro"))
    a = alarms["open"][0]
    key = {"dev": a["dev"], "seq": a["seq"], "point": a["point"], "rule": a["rule"]}
    assert a["ack"] is None
    bob = site.logged_in("bob")
    status, _, out = bob.request("POST", "/api/v1/alarms/ack", key, {"X-CSRF-Token": bob.csrf})
    assert (status, out["error"]) == (403, "forbidden")
    assert site.client().request("POST", "/api/v1/alarms/ack", key,
                                 site.bearer("ro"))[0] == 403
    alice = site.logged_in("alice")
    status, _, out = alice.request("POST", "/api/v1/alarms/ack", key)
    assert (status, out["error"]) == (403, "csrf")
    assert alice.request("POST", "/api/v1/alarms/ack", key, {"X-CSRF-Token": bob.csrf})[0] == 403
    assert alice.request("POST", "/api/v1/alarms/ack", key, {
        "X-CSRF-Token": alice.csrf, "Origin": "http://evil.invalid"})[0] == 403
    ok = {"X-CSRF-Token": alice.csrf}
    assert alice.request("POST", "/api/v1/alarms/ack", {**key, "seq": "2"}, ok)[0] == 400
    assert alice.request("POST", "/api/v1/alarms/ack", raw=b"{}", headers={
        **ok, "Content-Type": "text/plain"})[0] == 400
    assert alice.request("POST", "/api/v1/alarms/ack", {**key, "rule": "nope"}, ok)[0] == 404
    assert alice.request("POST", "/api/v1/alarms/ack", raw=b"x" * 5000, headers={
        **ok, "Content-Type": "application/json"})[0] == 400
    status, _, out = alice.request("POST", "/api/v1/alarms/ack", key, ok)
    assert status == 200 and out["ack"]["by"] == "alice"
    assert abs(out["ack"]["at"] - time.time()) < 60  # noqa: PLR2004 - it is a timestamp
    status, _, again = site.client().request("POST", "/api/v1/alarms/ack", key,
                                             site.bearer("op"))  # a token needs no CSRF
    assert status == 200 and again["ack"] == out["ack"]  # the first acknowledgement stands
    _, _, alarms = bob.request("GET", "/api/v1/alarms")
    assert alarms["open"][0]["ack"] == out["ack"]


def test_metrics_in_prometheus_text_format(site: Site) -> None:
    status, headers, text = site.client().request("GET", "/metrics", headers=site.bearer("ro"))
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: dict[tuple[str, tuple[Any, ...]], float] = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text) for s in fam.samples}
    assert samples[("cim_receiver_messages_total", (("outcome", "stored"),))] == 5
    assert samples[("cim_receiver_readings_total", ())] == 500
    assert samples[("cim_receiver_rejects_total", (("reason", "bad_signature"),))] == 2
    assert samples[("cim_receiver_ack_latency_seconds_count", ())] == 1
    assert samples[("cim_receiver_ack_latency_seconds_bucket", (("le", "0.005"),))] == 1
    assert samples[("cim_receiver_queue_messages", ())] == 0
    assert samples[("cim_gateway_silent", (("dev", "ps-0003"),
                                           ("site_type", "pump_station")))] == 1
    assert samples[("cim_gateway_online", (("dev", "ps-0002"),
                                           ("site_type", "pump_station")))] == 0
    seen = samples[("cim_gateway_last_seen_timestamp_seconds",
                    (("dev", "ps-0001"), ("site_type", "pump_station")))]
    assert time.time() - 600 < seen <= time.time()
    assert samples[("cim_gateways", ())] == 3


def test_logout_needs_csrf_and_ends_the_session(site: Site) -> None:
    c = site.logged_in("alice")
    assert c.request("POST", "/api/v1/logout", {})[0] == 403
    assert c.request("POST", "/api/v1/logout", {}, {"X-CSRF-Token": c.csrf})[0] == 200
    assert "cim_session" not in c.cookies
    assert c.request("GET", "/api/v1/session")[0] == 401


def test_only_loopback_without_tls() -> None:
    with pytest.raises(WebError, match="not a loopback address: give --tls-cert"):
        bind("0.0.0.0:0", tls=False, plaintext=False)  # noqa: S104
    with pytest.raises(WebError, match="is not HOST:PORT"):
        bind("8080", tls=False, plaintext=False)
    bind("[::1]:0", tls=False, plaintext=False).close()


def test_user_and_token_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "rx.sqlite")
    assert cimedge(["receiver", "user", "add", "carol", "--role", "operator", "--db", db]) == 0
    otp = capsys.readouterr().out.splitlines()[-1]
    assert len(otp) == 16  # noqa: PLR2004 - 12 random bytes, base64url
    assert cimedge(["receiver", "user", "add", "carol", "--role", "operator", "--db", db]) == 1
    assert "user 'carol' exists" in capsys.readouterr().err
    assert cimedge(["receiver", "token", "mon", "--role", "read-only", "--db", db]) == 0
    token = capsys.readouterr().out.splitlines()[-1]
    assert token.startswith("cimtok_")
    assert cimedge(["receiver", "user", "list", "--db", db]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "carol\tuser\toperator\t(one-time password not used yet)", "mon\ttoken\tread-only"]
    state = WebState(tmp_path / "web.sqlite")
    assert oct((tmp_path / "web.sqlite").stat().st_mode & 0o777) == "0o600"
    assert state.token(token).role == "read-only"  # type: ignore[union-attr]
    assert state.login("carol", otp, PASSWORD)[1].role == "operator"
    state.close()
    assert cimedge(["receiver", "user", "reset", "carol", "--db", db]) == 0
    assert cimedge(["receiver", "user", "remove", "mon", "--db", db]) == 0
    assert "token mon removed" in capsys.readouterr().out
    assert cimedge(["receiver", "user", "remove", "mon", "--db", db]) == 1
    assert "no user or token 'mon'" in capsys.readouterr().err


def test_web_state_in_postgresql(pg_url: str) -> None:
    state = WebState(pg_url)
    otp = state.add_user("dana", "operator")
    with pytest.raises(WebStateError, match="password_change_required"):
        state.login("dana", otp, None)
    session, who = state.login("dana", otp, PASSWORD)
    assert state.session(session) == who and who.operator
    token = state.add_token("mon", "read-only")
    assert state.token(token).name == "mon"  # type: ignore[union-attr]
    ack = state.ack_alarm(("ps-0001", 2, "level", "high"), "dana")
    assert state.acks("ps-0001") == {("ps-0001", 2, "level", "high"): ack}
    assert state.acks("ps-0002") == {}
    state.logout(session)
    assert state.session(session) is None
    assert state.remove("dana") == "user"
    state.close()
    assert WebState(pg_url).accounts() == [("mon", "token", "read-only", False)]


def _serve(tmp: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    """`cimedge receiver web` as a process; its URL from the ready line."""
    p = subprocess.Popen([sys.executable, "-m", "cimedge.provisioning.cli", "receiver", "web",
                          "--db", str(tmp / "rx.sqlite"), "--http", "127.0.0.1:0", *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout is not None
    line = p.stdout.readline()
    assert line.startswith("web ready: "), p.stderr.read() if p.stderr else line
    return p, line.split()[2]


def test_receiver_web_command_plain_and_over_tls(tmp_path: Path) -> None:
    from cimedge.provisioning import ca

    fill(tmp_path / "rx.sqlite", tmp_path / "registry.sqlite")
    state = WebState(tmp_path / "web.sqlite")
    token = state.add_token("mon", "read-only")
    state.close()
    auth = {"Authorization": f"Bearer {token}"}
    p, url = _serve(tmp_path)
    try:
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(urllib.request.Request(url + "api/v1/fleet",
                                                           headers=auth), timeout=10) as res:
            assert json.loads(res.read())["total"] == 3
            assert res.headers.get("strict-transport-security") is None
    finally:
        p.terminate()
        assert p.wait(20) == 0
    ca.init(tmp_path / "ca")
    ca.server_cert(tmp_path / "ca", ["127.0.0.1"], tmp_path)
    p, url = _serve(tmp_path, "--tls-cert", str(tmp_path / "server.pem"),
                    "--tls-key", str(tmp_path / "server.key"))
    try:
        assert url.startswith("https://127.0.0.1:")
        context = ssl.create_default_context(cafile=str(tmp_path / "ca" / "ca.pem"))
        with urllib.request.urlopen(urllib.request.Request(url + "api/v1/fleet", headers=auth),
                                    timeout=10, context=context) as res:
            assert res.status == 200
            assert res.headers["strict-transport-security"] == "max-age=31536000"
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # no plain HTTP there
            urllib.request.urlopen(url.replace("https", "http") + "api/v1/fleet", timeout=10)  # noqa: S310
    finally:
        p.terminate()
        assert p.wait(20) == 0
    bad = subprocess.run([sys.executable, "-m", "cimedge.provisioning.cli", "receiver", "web",
                          "--db", str(tmp_path / "rx.sqlite"), "--http", "0.0.0.0:8080"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 1 and bad.stderr.strip().endswith(
        "--http 0.0.0.0:8080 is not a loopback address: give --tls-cert and --tls-key, or "
        "--plaintext-http to serve it unencrypted on purpose")
