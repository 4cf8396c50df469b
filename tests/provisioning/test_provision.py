"""`cimedge provision` and `cimedge ca`, driven as a technician would, plus the TOML editor."""

from __future__ import annotations

import argparse
import json
import stat
import tomllib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from provkit import TEMPLATE, cimedge

from cimedge.edge import config as site_config
from cimedge.provisioning import certs, provision, tomledit

SITE_TYPES = ["pump_station", "lamp_pole", "roadside_unit", "utility_tunnel"]


@pytest.mark.parametrize("site_type", SITE_TYPES)
def test_provision_every_site_type_from_its_template(tmp_path, site_type):
    state = tmp_path / "gw"
    out = cimedge("provision", "--site-type", site_type, "--device-id", "gw-0001",
                  "--location", "Pole 17, Riverside Rd", "--state-dir", state,
                  "--broker", "mqtts://broker.city.example:8883")
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    assert out.stdout.splitlines()[0] == f"provisioned gw-0001 ({site_type}) in {state}"
    assert sorted(p.name for p in state.iterdir()) == [
        "device.key", "enrollment.json", "site.toml", "tls.csr", "tls.key"]
    for secret in ("device.key", "tls.key"):
        assert stat.S_IMODE((state / secret).stat().st_mode) == 0o600
    site = site_config.load(state / "site.toml")
    assert (site.gateway.device_id, site.gateway.site_type, site.gateway.location) == (
        "gw-0001", site_type, "Pole 17, Riverside Rd")
    assert (site.sync.broker, site.sync.ca_file, site.sync.cert_file, site.sync.key_file) == (
        "mqtts://broker.city.example:8883", "ca.pem", "tls.crt", "tls.key")
    assert "PRIVATE KEY" not in (state / "site.toml").read_text()  # paths to secrets only
    record = json.loads((state / "enrollment.json").read_text())
    assert (record["v"], record["device_id"], record["site_type"], record["location"]) == (
        1, "gw-0001", site_type, "Pole 17, Riverside Rd")
    csr = x509.load_pem_x509_csr((state / "tls.csr").read_bytes())
    assert csr.is_signature_valid
    assert csr.subject.rfc4514_string() == f"OU={site_type},CN=gw-0001"
    assert isinstance(csr.public_key(), ec.EllipticCurvePublicKey)
    assert csr.public_key().curve.name == "secp256r1"


def test_never_replaces_a_key_without_force(tmp_path):
    args = ["provision", "--site-type", "lamp_pole", "--device-id", "lp-0007", "--state-dir",
            tmp_path]
    assert cimedge(*args).returncode == 0
    before = (tmp_path / "device.key").read_bytes()
    out = cimedge(*args)
    assert (out.returncode, out.stderr) == (
        1, f"cimedge: {tmp_path}/device.key already holds a key; pass --force to replace this "
           "gateway's identity, or run `cimedge rotate-key` to rotate it\n")
    assert (tmp_path / "device.key").read_bytes() == before
    assert cimedge(*args, "--force").returncode == 0
    assert (tmp_path / "device.key").read_bytes() != before


@pytest.mark.parametrize(("extra", "error"), [
    (["--device-id", "LP 7"], "cimedge: device id 'LP 7' must be 3-64 of a-z, 0-9 and -\n"),
    (["--site-type", "sewer"], "cimedge: --site-type: no template for 'sewer' (known: lamp_pole, "
                               "pump_station, roadside_unit, utility_tunnel); or pass "
                               "--template FILE\n"),
    (["--set", "devices.lp9.port=3"], "cimedge: --set: 'devices.lp9.port=3': there is no "
                                      "[devices.lp9] table in edge/sites/lamp_pole.toml\n"),
    (["--set", "nonsense"], "cimedge: --set: 'nonsense' is not NAME=VALUE or TABLE.KEY=VALUE "
                            "(ps1_host=10.0.0.5, devices.ps1.port=/dev/ttyUSB0)\n"),
    (["--broker", "http://x"], None),
    (["--backend", "/nonexistent/backend.json"], "cimedge: /nonexistent/backend.json: cannot "
                                                 "read: No such file or directory\n"),
])
def test_refusals_leave_nothing_behind(tmp_path, extra, error):
    args = {"--site-type": "lamp_pole", "--device-id": "lp-0007"}
    for flag, value in zip(extra[::2], extra[1::2], strict=True):
        args[flag] = value if flag != "--set" else args.get(flag, value)
    flat = [x for kv in args.items() for x in kv]
    out = cimedge("provision", *flat, "--state-dir", tmp_path / "gw")
    assert out.returncode == 1
    if error:
        assert out.stderr == error
    else:
        assert out.stderr.startswith("cimedge: the site config made from edge/sites/lamp_pole.toml"
                                     " is not valid: ")
        assert "sync.broker" in out.stderr
    assert not (tmp_path / "gw").exists()


def test_template_placeholders_and_values_from_the_command_line(tmp_path):
    (tmp_path / "t.toml").write_text(TEMPLATE)
    out = cimedge("provision", "--site-type", "pump_station", "--device-id", "ps-0042",
                  "--state-dir", tmp_path / "gw", "--template", tmp_path / "t.toml",
                  "--broker", "mqtt://127.0.0.1:1883", "--set", "ps1_port=1502",
                  "--set", "rtu_port=/dev/ttyUSB0", "--set", "devices.m2.unit=9",
                  "--set", "store.quota_bytes=20000000", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["template"] == str(tmp_path / "t.toml")
    site = site_config.load(tmp_path / "gw" / "site.toml")
    assert site.devices["ps1"].config.port == 1502
    assert site.devices["m1"].config.port == "/dev/ttyUSB0"
    assert site.devices["m2"].config.unit == 9
    assert site.store.quota_bytes == 20_000_000
    assert (site.sync.broker, site.sync.cert_file) == ("mqtt://127.0.0.1:1883", "")  # plain
    assert (tmp_path / "gw" / "site.toml").read_text().startswith("# A test site: ")  # comments

    out = cimedge("provision", "--site-type", "pump_station", "--device-id", "ps-0043",
                  "--state-dir", tmp_path / "gw2", "--template", tmp_path / "t.toml")
    assert (out.returncode, out.stderr) == (1, f"cimedge: --set: {tmp_path}/t.toml needs a value "
                                               "for $rtu_port: pass --set rtu_port=VALUE\n")


def test_provision_with_a_test_ca_signs_the_request(tmp_path):
    from cimedge.cloud_sync import backend_keys as bk

    assert cimedge("ca", "init", "--ca-dir", tmp_path / "ca").returncode == 0
    ingest = bk.write_private_key(tmp_path / "ingest.key")
    bk.write(tmp_path / "backend.json", bk.BackendKeys((bk.entry_for(ingest, "ingest"),)))
    out = cimedge("provision", "--site-type", "roadside_unit", "--device-id", "rsu-0003",
                  "--state-dir", tmp_path / "gw", "--ca-dir", tmp_path / "ca",
                  "--backend", tmp_path / "backend.json")
    assert out.returncode == 0, out.stderr
    assert "  backend      backend.json  the keys whose acks and commands it believes\n" in \
        out.stdout
    assert bk.load(tmp_path / "gw" / "backend.json") == bk.load(tmp_path / "backend.json")
    cert = certs.load_cert(tmp_path / "gw" / "tls.crt")
    assert certs.common_name(cert.subject) == "rsu-0003"
    assert certs.issued_by(cert, certs.load_cert(tmp_path / "gw" / "ca.pem"))
    assert certs.same_key(cert, certs.load_key(tmp_path / "gw" / "tls.key"))


def test_without_edge_sites_pump_station_falls_back_to_the_demo_config(monkeypatch, tmp_path):
    from cimedge import edge
    monkeypatch.setitem(__import__("sys").modules, "cimedge.edge.sites", None)  # import fails
    monkeypatch.delattr(edge, "sites", raising=False)
    args = argparse.Namespace(site_type="pump_station", device_id="ps-0001", broker=None,
                              set=[], template=None)
    text, source = provision.template(args)
    assert source == "the demo's pump station"
    assert site_config.loads(text, str(tmp_path / "site.toml")).gateway.device_id == "ps-0001"
    assert provision.site_types() == ["pump_station"]


# -- cimedge ca -------------------------------------------------------------------------------
def test_ca_commands(tmp_path):
    d = tmp_path / "ca"
    out = cimedge("ca", "init", "--ca-dir", d)
    assert out.stdout == f"CA 'CIM Edge test CA': key {d}/ca.key (0600), certificate {d}/ca.pem\n"
    assert stat.S_IMODE((d / "ca.key").stat().st_mode) == 0o600
    out = cimedge("ca", "init", "--ca-dir", d)
    assert (out.returncode, out.stderr) == (
        1, f"cimedge: {d}/ca.key already holds a CA key; pass --force to replace it (every "
           "certificate it signed stops verifying)\n")

    key = certs.new_key()
    (tmp_path / "evil.csr").write_bytes(certs.csr_for(key, "#", "x"))
    out = cimedge("ca", "sign", tmp_path / "evil.csr", "--ca-dir", d)
    assert (out.returncode, out.stderr) == (
        1, f"cimedge: {tmp_path}/evil.csr: common name '#' is not a device id (3-64 of a-z, 0-9 "
           "and -); the broker's ACL is keyed on it\n")
    (tmp_path / "dev.csr").write_bytes(certs.csr_for(key, "ut-0001", "utility_tunnel"))
    out = cimedge("ca", "sign", tmp_path / "dev.csr", "--ca-dir", d, "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert (info["certificate"], info["subject"]) == (str(tmp_path / "dev.crt"),
                                                      "OU=utility_tunnel,CN=ut-0001")
    out = cimedge("ca", "sign", tmp_path / "missing.csr", "--ca-dir", d)
    assert (out.returncode, out.stderr) == (1, f"cimedge: cannot read {tmp_path}/missing.csr: No "
                                               "such file or directory\n")
    out = cimedge("ca", "sign", tmp_path / "dev.csr", "--ca-dir", tmp_path / "nothing")
    assert out.stderr == (f"cimedge: {tmp_path}/nothing holds no CA: run `cimedge ca init "
                          f"--ca-dir {tmp_path}/nothing` first\n")

    out = cimedge("ca", "mosquitto", "--ca-dir", d, "--out-dir", tmp_path / "mq", "--port",
                  "8884", "--backend-user", "cim-ingest")  # could be a device id: refused
    assert (out.returncode, out.stderr) == (1, (
        "cimedge: backend name 'cim-ingest' must hold a dot (backend.ingest-1, say): a name "
        "without one could be a device id, and a gateway's certificate would then carry the "
        "backend's rights\n"))
    assert not (tmp_path / "mq").exists() or not any((tmp_path / "mq").iterdir())
    out = cimedge("ca", "mosquitto", "--ca-dir", d, "--out-dir", tmp_path / "mq", "--port",
                  "8884", "--backend-user", "backend.ingest-1", "--backend-user",
                  "backend.ingest-2")
    assert out.returncode == 0, out.stderr
    conf = (tmp_path / "mq" / "mosquitto-tls.conf").read_text()
    assert ("require_certificate true\nuse_identity_as_username true\n"
            "use_username_as_clientid true\n") in conf
    assert conf.endswith("max_packet_size 1052672\n")
    assert f"cafile {tmp_path / 'mq' / 'ca.pem'}\n" in conf  # the broker's own copy
    acl = (tmp_path / "mq" / "acl").read_text()
    backend = ("topic read cim/v1/+/batch\ntopic read cim/v1/+/event\n"
               "topic read cim/v1/+/status\ntopic write cim/v1/+/ack\n"
               "topic write cim/v1/+/cmd\n")
    assert f"user backend.ingest-1\n{backend}\nuser backend.ingest-2\n{backend}" in acl
    assert acl.endswith("pattern write cim/v1/%u/batch\npattern write cim/v1/%u/event\n"
                        "pattern write cim/v1/%u/status\npattern read cim/v1/%u/ack\n"
                        "pattern read cim/v1/%u/cmd\n")
    assert "readwrite" not in acl.replace("# ", "")
    server = certs.load_cert(tmp_path / "mq" / "server.pem")
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(n.value) for n in names] == ["127.0.0.1", "localhost"]


# -- tomledit ---------------------------------------------------------------------------------
TEXT = """# head
[gateway]
device_id = "x"  # why
site_type = "pump_station"

[sync]
broker = "mqtt://a:1"
list = [
  1, 2,
]

[devices.ps1.points.level]
address = 0
"""


@pytest.mark.parametrize(("table", "key", "value", "expect"), [
    ("gateway", "device_id", "ps-1", 'device_id = "ps-1"'),
    ("gateway", "location", "A \"B\"", 'location = "A \\"B\\""'),
    ("store", "quota_bytes", 5, "[store]\nquota_bytes = 5"),
    ("devices.ps1.points.level", "address", 7, "address = 7"),
    ("sync", "flush_interval_s", 0.5, "flush_interval_s = 0.5"),
])
def test_tomledit_sets_one_key_and_keeps_the_rest(table, key, value, expect):
    out = tomledit.set_key(TEXT, table, key, value)
    assert expect in out
    assert out.startswith("# head\n")
    parsed = tomllib.loads(out)
    node = parsed
    for part in table.split("."):
        node = node[part]
    assert node[key] == value
    assert parsed["sync"]["list"] == [1, 2]


def test_tomledit_refuses_what_it_cannot_edit_safely():
    with pytest.raises(tomledit.EditError, match="spans several lines"):
        tomledit.set_key(TEXT, "sync", "list", 3)
    with pytest.raises(tomledit.EditError, match=r"there is no \[devices.ps2\] table"):
        tomledit.set_key(TEXT, "devices.ps2", "port", 3, create=False)
    assert tomledit.parse_value("502") == 502
    assert tomledit.parse_value("/dev/ttyUSB0") == "/dev/ttyUSB0"
    assert tomledit.parse_value("true") is True
