"""The downlink's pure parts: the verifier against messages signed by pyjwt, the deployment patch on the
file's text, the configuration checks of `[tenants.cloud]`, and the history's crash recovery."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import ECKey

from edge.config.history import ConfigHistory, recover_interrupted
from edge.downlink.deploy import patched_text
from edge.downlink.signing import KeyRing, Refused, Verifier
from edge.sdk.errors import ConfigError
from tests.downlink_harness import claims, public_pem, sign
from tests.e2e import load, write_config

KEY = ec.generate_private_key(ec.SECP256R1())


def _verifier(folder: Path) -> Verifier:
    (folder / "acme.pem").write_bytes(public_pem(KEY))
    return Verifier("acme", "gw-test", KeyRing([folder / "acme.pem"]), leeway=5.0)


def test_the_verifier_accepts_a_pyjwt_message_and_names_what_is_wrong_with_the_others(tmp_path: Path) -> None:
    verifier = _verifier(tmp_path)
    good = claims("acme", "point.write", site="roof", device="inv-01", point="p", value=1)
    assert verifier.verify(sign(KEY, good))["jti"] == good["jti"]
    cases = {
        "expired": claims("acme", "point.write", ttl=-60),
        "for tenant 'globex'": claims("globex", "point.write"),
        "for gateway 'gw-x'": claims("acme", "point.write", gateway="gw-x"),
        "unknown kind 'reboot'": claims("acme", "reboot"),
    }
    for reason, body in cases.items():
        with pytest.raises(Refused, match=reason):
            verifier.verify(sign(KEY, body))
    with pytest.raises(Refused, match="signature does not verify") as refused:
        verifier.verify(sign(ec.generate_private_key(ec.SECP256R1()), good))
    assert refused.value.claims["jti"] == good["jti"]  # named in the refusal, never acted on
    with pytest.raises(Refused, match="not a compact JWS"):
        verifier.verify("not-a-token")
    payload = sign(KEY, claims("acme", "point.write")).split(".")[1]
    with pytest.raises(Refused):  # {"alg": "none"} swapped in: never accepted
        verifier.verify(f"eyJhbGciOiJub25lIn0.{payload}.")
    no_id = {k: v for k, v in claims("acme", "point.write").items() if k != "jti"}
    with pytest.raises(Refused, match="no 'jti'"):
        verifier.verify(sign(KEY, no_id))


def test_a_key_ring_takes_changed_files_and_keeps_its_keys_when_a_change_leaves_none(tmp_path: Path) -> None:
    old, new = KEY, ec.generate_private_key(ec.SECP256R1())
    first, second = tmp_path / "first.pem", tmp_path / "second.pem"
    first.write_bytes(public_pem(old))
    second.write_bytes(public_pem(new))
    both = Verifier(
        "acme", "gw-test", KeyRing([first, second])
    )  # verify_key and verify_keys: either verifies
    for key in (old, new):
        body = claims("acme", "point.write")
        assert both.verify(sign(key, body))["jti"] == body["jti"]
    ring = KeyRing([first])
    single = Verifier("acme", "gw-test", ring)
    single.verify(sign(old, claims("acme", "point.write")))
    first.write_text("-----BEGIN PUBLIC KEY-----\nhalf writ")  # mid-copy: the key read before still verifies
    single.verify(sign(old, claims("acme", "point.write")))
    tmp = tmp_path / "first.pem.tmp"
    tmp.write_bytes(public_pem(new))
    tmp.replace(first)  # the rotation finished: only the new key verifies
    single.verify(sign(new, claims("acme", "point.write")))
    with pytest.raises(Refused, match="does not verify with tenant acme's key"):
        single.verify(sign(old, claims("acme", "point.write")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no key"):
        KeyRing([tmp_path / "empty"])
    assert ECKey.import_key(public_pem(new)).as_dict() == ring.keys()[0].as_dict()


TEXT = """# operator's notes
[gateway]
id = "gw"

[[tenants]]
id = "acme"  # the landlord
entitlements = ["solar"]

[[tenants]]
id = "globex"

[[devices]]
name = "a1"  # roof inverter
tenant = "acme"
driver = "modbus"

[[devices]]
name = "g1"
tenant = "globex"
driver = "modbus"
"""


def test_a_patch_keeps_comments_and_stays_within_the_tenant() -> None:
    patch = {
        "devices": {"upsert": [{"name": "a2", "driver": "modbus"}], "remove": []},
        "entitlements": ["billing"],
    }
    out = patched_text(TEXT, "acme", "tenant", {"patch": patch})
    assert "# operator's notes" in out and "# roof inverter" in out and "# the landlord" in out
    assert 'name = "a2"' in out and 'tenant = "acme"' in out and '["billing"]' in out
    refusals = {
        "belongs to tenant 'globex'": {"devices": {"remove": ["g1"]}},
        "would belong to tenant 'globex'": {"devices": {"upsert": [{"name": "a3", "tenant": "globex"}]}},
        "no such devices": {"devices": {"remove": ["zz"]}},
        "operator's": {"modules": [{"name": "solar"}]},
        "unknown patch sections": {"firmware": {}},
    }
    for reason, bad in refusals.items():
        with pytest.raises(Refused, match=reason):
            patched_text(TEXT, "acme", "tenant", {"patch": bad})
    with pytest.raises(Refused, match="whole-file"):
        patched_text(TEXT, "acme", "tenant", {"file": TEXT})
    with pytest.raises(Refused, match=r"\[gateway\]"):
        patched_text(TEXT, "acme", "gateway", {"file": TEXT.replace('id = "gw"', 'id = "other"')})


def test_tenant_cloud_settings_are_checked_when_the_configuration_loads(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "edge.toml", mqtt_port=1883, modbus_port=5020, devices=1, tenants=("acme",)
    )
    cloud = (
        '[tenants.cloud]\nurl = "http://127.0.0.1:1"\ntoken_url = "http://127.0.0.1:1/t"\nclient_id = "a"\n'
    )
    text = path.read_text().replace('entitlements = ["solar"]\n', 'entitlements = ["solar"]\n' + cloud, 1)
    plain = text.replace(
        'client_id = "a"\n', 'client_id = "a"\nclient_secret = "hunter2"\nverify_key = "k.pem"\n'
    )
    path.write_text(plain)
    with pytest.raises(ConfigError) as error:
        load(path)
    reasons = " ".join(f"{i.location}: {i.reason}" for i in error.value.issues)
    assert "must be a reference" in reasons
    path.write_text(plain.replace('"hunter2"', '"env:EDGE_X"'))
    with pytest.raises(ConfigError) as error:
        load(path)
    assert any("verify_key" in i.location and "no such file" in i.reason for i in error.value.issues)
    (tmp_path / "k.pem").write_bytes(public_pem(KEY))
    assert load(path)[0].config.tenants[0].cloud is not None


def test_a_deployment_interrupted_before_it_finished_is_undone_at_the_next_start(tmp_path: Path) -> None:
    path = write_config(tmp_path / "edge.toml", mqtt_port=1883, modbus_port=5020, devices=1)
    before = path.read_text()
    history = ConfigHistory(tmp_path / "data")
    history.record(before, source="start")
    history.begin("acme", "m-1", "v2", before)
    path.write_text(before + "# half of a deployment\n")
    history.close()
    interrupted = recover_interrupted(path)
    assert interrupted is not None and interrupted.label == "v2" and path.read_text() == before
    assert recover_interrupted(path) is None  # once
    history = ConfigHistory(tmp_path / "data")
    assert history.interrupted() == interrupted  # for the downlink to report
    assert history.versions(1)[0].source == "rollback" and "interrupted" in (
        history.versions(1)[0].reason or ""
    )
    assert time.time() - history.versions(1)[0].at < 60
    history.close()
