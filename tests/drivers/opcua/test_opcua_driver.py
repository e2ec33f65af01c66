"""OPC UA driver without a server: models, plan compilation, status codes → quality, typed values, certificates.

Everything here is pure; the tests against the lift simulator are in test_opcua_session.py and, through the
whole gateway, in test_opcua_gateway.py.
"""

from __future__ import annotations

import datetime
import os
import stat
import tomllib
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from asyncua import ua
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import ValidationError
from typer.testing import CliRunner

from drivers.opcua import OpcuaConnection, OpcuaDriver, OpcuaPoint, TrustList, to_raw, to_variant
from drivers.opcua.discovery import _point_name, unit_code, unit_symbol
from edge.cli.certs_cmd import app as certs_app
from edge.config.loader import parse_profile
from edge.plugins import DRIVER_GROUP, PluginRegistry, read_manifest
from edge.sdk.certs import application_uri, load_certificate, write_application_certificate
from edge.sdk.drivers import DeviceSpec, Driver, SupportsDiscovery, SupportsPush
from edge.sdk.errors import ConfigIssue
from edge.sdk.points import PointFault, Qualified, Quality

PROFILE = Path(__file__).resolve().parents[3] / "drivers" / "opcua" / "profiles" / "lift.toml"
OPCUA_ENTRY = EntryPoint(name="opcua", value="drivers.opcua:OpcuaDriver", group=DRIVER_GROUP)


def _spec(connection: OpcuaConnection, points: tuple[OpcuaPoint, ...]) -> DeviceSpec:
    return DeviceSpec("lift-1", "acme", "tower", "opcua", connection, points, 1.0, 1.0, "lift")


def _lift_points(driver: OpcuaDriver) -> tuple[OpcuaPoint, ...]:
    issues: list[ConfigIssue] = []
    points = parse_profile(tomllib.loads(PROFILE.read_text()), str(PROFILE), driver, "opcua", issues)
    assert not issues and points is not None, issues
    return tuple(p for p in points if isinstance(p, OpcuaPoint))


# ---- plug-in shape ---------------------------------------------------------------------------------------


def test_manifest_and_protocols() -> None:
    manifest = read_manifest("drivers.opcua")
    assert (manifest.name, manifest.kind, manifest.kernel_api) == ("opcua", "driver", ">=1,<2")
    registry = PluginRegistry.from_entry_points([OPCUA_ENTRY])
    driver = registry.driver("opcua")
    assert isinstance(driver, Driver) and isinstance(driver, SupportsDiscovery)
    connection = OpcuaConnection(url="opc.tcp://127.0.0.1:4840", security="None")
    session = OpcuaDriver().session(_spec(connection, (OpcuaPoint(name="a", node="i=2258"),)))
    assert isinstance(session, SupportsPush)


# ---- connection model: security is on unless "None" is written out -------------------------------------


def test_security_none_must_be_explicit(tmp_path: Path) -> None:
    with pytest.raises(
        ValidationError, match=r'needs the gateway.s certificate and private_key.*"None" explicitly'
    ):
        OpcuaConnection(url="opc.tcp://plc:4840")
    with pytest.raises(ValidationError, match="trusted_server_certificates is empty"):
        OpcuaConnection(
            url="opc.tcp://plc:4840", certificate=tmp_path / "c.der", private_key=tmp_path / "k.pem"
        )
    secure = OpcuaConnection(
        url="opc.tcp://plc:4840",
        certificate=tmp_path / "c.der",
        private_key=tmp_path / "k.pem",
        trusted_server_certificates=[tmp_path / "trusted"],
    )
    assert (secure.security, secure.mode) == ("Basic256Sha256", "SignAndEncrypt")
    assert OpcuaConnection(url="opc.tcp://plc:4840", security="None").security == "None"
    with pytest.raises(ValidationError):
        OpcuaConnection(url="opc.tcp://plc:4840", security="Basic128Rsa15")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="clear text"):
        OpcuaConnection(url="opc.tcp://plc:4840", security="None", username="u", password="p")


def test_passwords_come_from_the_environment_and_stay_out_of_reprs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIFT_PASSWORD", "hunter2-canary")
    base = {
        "url": "opc.tcp://plc:4840/",
        "certificate": tmp_path / "c.der",
        "private_key": tmp_path / "k.pem",
        "trusted_server_certificates": [tmp_path],
        "username": "tech",
    }
    conn = OpcuaConnection.model_validate({**base, "password": "env:LIFT_PASSWORD"})
    assert conn.password is not None and conn.password.get_secret_value() == "hunter2-canary"
    assert "hunter2" not in repr(conn) and "hunter2" not in conn.model_dump_json()
    with pytest.raises(ValidationError, match="environment variable NOT_SET_ANYWHERE is not set"):
        OpcuaConnection.model_validate({**base, "password": "env:NOT_SET_ANYWHERE"})
    with pytest.raises(ValidationError, match="a password needs a username"):
        OpcuaConnection.model_validate({**base, "username": None, "password": "x"})


def test_command_line_forms_of_lists_and_tables(tmp_path: Path) -> None:
    """`edge device add --connection key=value` gives text; the model takes it."""
    conn = OpcuaConnection.model_validate(
        {
            "url": "opc.tcp://plc:4840",
            "certificate": "c.der",
            "private_key": "k.pem",
            "trusted_server_certificates": "/pki/trusted, /pki/plc.der",
            "node_variables": "lift=Lift2,bank=B",
        }
    )
    assert conn.trusted_server_certificates == (Path("/pki/trusted"), Path("/pki/plc.der"))
    assert conn.node_variables == {"lift": "Lift2", "bank": "B"}
    with pytest.raises(ValidationError, match="expected name=value"):
        OpcuaConnection.model_validate(
            {"url": "opc.tcp://plc:4840", "security": "None", "node_variables": "Lift2"}
        )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"url": "http://plc:4840"}, "not an opc.tcp"),
        ({"url": "opc.tcp://"}, "not an opc.tcp"),
        ({"keepalive_count": 30, "lifetime_count": 60}, "lifetime_count must be at least"),
        ({"user_certificate": "u.der"}, "go together"),
        ({"publishing_interval_ms": 0}, "greater than 0"),
    ],
)
def test_connection_errors_name_the_problem(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        OpcuaConnection.model_validate({"url": "opc.tcp://plc:4840", "security": "None", **changes})


# ---- points and the plan ------------------------------------------------------------------------------


def test_point_needs_exactly_one_address_and_a_valid_one() -> None:
    with pytest.raises(ValidationError, match="exactly one of 'node' and 'browse_path'"):
        OpcuaPoint(name="a")
    with pytest.raises(ValidationError, match="exactly one"):
        OpcuaPoint(name="a", node="i=1", browse_path="/2:A")
    with pytest.raises(ValidationError, match="not an OPC UA node id"):
        OpcuaPoint(name="a", node="Lift1.Floor")
    with pytest.raises(ValidationError, match="percent deadband is at most 100"):
        OpcuaPoint(name="a", node="i=1", deadband=150, deadband_type="percent")


def test_a_bad_node_id_in_a_profile_is_reported_with_file_and_point() -> None:
    raw = {
        "profile": {"name": "x", "driver": "opcua"},
        "points": [{"name": "good", "node": "ns=2;s=A"}, {"name": "floor", "node": "Lift1/Floor"}],
    }
    issues: list[ConfigIssue] = []
    assert parse_profile(raw, "x.toml", OpcuaDriver(), "opcua", issues) is None
    assert [(i.file, i.location) for i in issues] == [("x.toml", "points[1] (floor)")]
    assert "not an OPC UA node id" in issues[0].reason


def test_compile_keeps_config_order_parses_ids_and_fills_placeholders() -> None:
    driver = OpcuaDriver()
    points = _lift_points(driver)
    conn = OpcuaConnection(url="opc.tcp://h:4840", security="None", node_variables={"lift": "Lift2"})
    plan = driver.compile(_spec(conn, points))
    assert [p.name for p in plan.points] == [p.name for p in points]
    assert plan.points[0].node == "nsu=urn:edge-gw:sim:lift;s=Lift2.CurrentFloor"
    ref = plan.refs[0]
    assert ref.namespace_uri == "urn:edge-gw:sim:lift" and ref.node_id is not None
    assert ref.node_id.Identifier == "Lift2.CurrentFloor"
    assert {p.name for p in points if p.writable} == {"fault_code", "in_service", "target_floor"}
    assert {p.name: p.unit for p in points if p.unit} == {
        "car_load": "kg",
        "run_hours": "h",
        "position": "m",
        "speed": "m/s",
        "motor_temperature": "Cel",
    }
    missing = OpcuaConnection(url="opc.tcp://h:4840", security="None")
    with pytest.raises(ValueError, match=r"point 'current_floor'.*node_variables\.lift"):
        driver.compile(_spec(missing, points))
    mixed = (
        OpcuaPoint(name="by_index", node="ns=3;i=1001"),
        OpcuaPoint(name="by_path", browse_path="/2:Lifts/2:{lift}/2:Speed"),
    )
    plan = driver.compile(_spec(conn, mixed))
    assert plan.refs[0].node_id == ua.NodeId(1001, 3)
    assert plan.refs[1].browse_path is not None
    assert plan.refs[1].browse_path.Elements[1].TargetName.Name == "Lift2"


# ---- status codes → quality, values → scalars, writes → typed variants ---------------------------------


def _dv(value: object, code: int = 0, vt: ua.VariantType | None = None) -> ua.DataValue:
    return ua.DataValue(ua.Variant(value, vt), StatusCode=ua.StatusCode(code))


@pytest.mark.parametrize(
    ("dv", "expected"),
    [
        (_dv(7, vt=ua.VariantType.Int16), 7),
        (_dv(21.5), 21.5),
        (_dv(True), True),
        (_dv("up"), "up"),
        (_dv(7, 0x00000480, ua.VariantType.Int16), 7),  # Good with info bits (overflow): still good
        (
            _dv(3.0, ua.StatusCodes.UncertainLastUsableValue),
            Qualified(3.0, Quality.UNCERTAIN, "UncertainLastUsableValue"),
        ),
        (
            _dv(3.0, ua.StatusCodes.UncertainSensorNotAccurate),
            Qualified(3.0, Quality.UNCERTAIN, "UncertainSensorNotAccurate"),
        ),
        (_dv(None, ua.StatusCodes.BadNodeIdUnknown), PointFault("BadNodeIdUnknown")),
        (_dv(None, ua.StatusCodes.BadSensorFailure), PointFault("BadSensorFailure")),
        (_dv(None, ua.StatusCodes.BadCommunicationError | 0x400), PointFault("BadCommunicationError")),
        (_dv(datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)), "2026-01-02T03:04:05Z"),
        (_dv(ua.LocalizedText("Lobby")), "Lobby"),
        (_dv([1, 2, 3]), PointFault("array values are not supported")),
        (_dv(ua.ServerState.Running, vt=ua.VariantType.Int32), 0),
    ],
)
def test_status_codes_map_to_quality_and_values_to_scalars(dv: ua.DataValue, expected: object) -> None:
    assert to_raw(dv) == expected


@pytest.mark.parametrize(
    ("value", "vt", "sent"),
    [
        (5, ua.VariantType.Int16, 5),
        (5.0, ua.VariantType.UInt32, 5),
        (3, ua.VariantType.Double, 3.0),
        (1, ua.VariantType.Boolean, True),
        ("lobby", ua.VariantType.String, "lobby"),
    ],
)
def test_writes_are_typed_as_the_node(value: object, vt: ua.VariantType, sent: object) -> None:
    variant = to_variant(value, vt)  # type: ignore[arg-type]
    assert variant.VariantType is vt and variant.Value == sent and type(variant.Value) is type(sent)


@pytest.mark.parametrize(
    ("value", "vt", "message"),
    [
        (70000, ua.VariantType.Int16, "outside the Int16 range"),
        (-1, ua.VariantType.UInt16, "outside the UInt16 range"),
        (2.5, ua.VariantType.Int32, "needs a whole number"),
        (True, ua.VariantType.Int16, "needs a whole number"),
        ("3", ua.VariantType.Double, "needs a number"),
        (2, ua.VariantType.Boolean, "true or false"),
        (1e39, ua.VariantType.Float, "outside the Float range"),
        (b"x", ua.VariantType.ByteString, "not supported"),
    ],
)
def test_values_that_do_not_fit_the_node_type_are_refused(
    value: object, vt: ua.VariantType, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        to_variant(value, vt)  # type: ignore[arg-type]


# ---- discovery helpers -----------------------------------------------------------------------------------


def test_engineering_units_map_to_the_gateway_units() -> None:
    def eu(code: str, text: str = "") -> ua.EUInformation:
        packed = 0
        for char in code:
            packed = (packed << 8) | ord(char)
        return ua.EUInformation(
            NamespaceUri="http://www.opcfoundation.org/UA/units/un/cefact",
            UnitId=packed,
            DisplayName=ua.LocalizedText(text),
        )

    assert unit_code(4408652) == "CEL"
    assert [unit_symbol(eu(c)) for c in ("CEL", "P1", "MTR", "KGM", "HUR", "KWH")] == [
        "Cel",
        "%",
        "m",
        "kg",
        "h",
        "kWh",
    ]
    assert unit_symbol(eu("XYZ", "furlong")) == "furlong"  # unknown code: the server's display name
    assert unit_symbol(None) is None
    assert _point_name(["Lifts", "Lift 1", "Car-Load (kg)"]) == "Lifts.Lift_1.Car-Load_kg"
    long = _point_name(["A" * 40, "B" * 40])
    assert len(long) <= 64 and long.endswith("B" * 40)


# ---- certificates and the trust list ------------------------------------------------------------------


def test_application_certificate_has_what_opc_ua_needs(tmp_path: Path) -> None:
    files = write_application_certificate(
        tmp_path, application_uri="urn:acme:gw", common_name="gw-1", days=30
    )
    cert = load_certificate(files.certificate)
    assert application_uri(cert) == "urn:acme:gw"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.content_commitment and usage.key_encipherment
    assert usage.data_encipherment and usage.key_cert_sign
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert stat.S_IMODE(os.stat(files.private_key).st_mode) == 0o600
    assert load_certificate(files.certificate_pem) == cert
    with pytest.raises(FileExistsError):
        write_application_certificate(tmp_path, application_uri="urn:acme:gw", common_name="gw-1")


def test_certs_create_command(tmp_path: Path) -> None:
    runner = CliRunner()
    args = [
        "create",
        "--out",
        str(tmp_path / "pki"),
        "--uri",
        "urn:acme:gw:1",
        "--name",
        "gw-1",
        "--days",
        "10",
    ]
    result = runner.invoke(certs_app, args)
    assert result.exit_code == 0, result.output
    assert "thumbprint" in result.output and (tmp_path / "pki" / "certificate.der").exists()
    assert runner.invoke(certs_app, args).exit_code == 1  # never silently replaces the gateway's identity
    assert runner.invoke(certs_app, [*args, "--force"]).exit_code == 0
    bad = runner.invoke(certs_app, ["create", "--out", str(tmp_path / "x"), "--uri", "nouri", "--name", "n"])
    assert bad.exit_code == 2 and "not a URI" in bad.output


def _ca_and_leaf(tmp_path: Path) -> tuple[Path, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Site CA")])
    now = datetime.datetime.now(datetime.UTC)
    ca = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=10))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    leaf_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "plc-7")]))
        .issuer_name(name)
        .public_key(leaf_key.public_key())
        .serial_number(2)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=5))
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / "ca.pem"
    path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return path, leaf


def test_trust_list_pins_certificates_or_trusts_a_ca_never_anything_else(tmp_path: Path) -> None:
    pinned = write_application_certificate(tmp_path / "plc", application_uri="urn:plc", common_name="plc")
    stranger = write_application_certificate(tmp_path / "mitm", application_uri="urn:plc", common_name="plc")
    trust_dir = tmp_path / "trusted"
    trust_dir.mkdir()
    (trust_dir / "plc.der").write_bytes(pinned.certificate.read_bytes())
    (trust_dir / "notes.txt").write_text("ignored")
    (trust_dir / "broken.pem").write_text("-----BEGIN CERTIFICATE-----\nnope\n")
    trust = TrustList.load([trust_dir])
    assert trust.check(load_certificate(pinned.certificate)) is None
    refusal = trust.check(load_certificate(stranger.certificate))
    assert refusal is not None and "not on the trust list" in refusal and "broken.pem" in refusal
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=400)
    assert "expired" in (trust.check(load_certificate(pinned.certificate), now=later) or "")
    ca_path, leaf = _ca_and_leaf(tmp_path)
    assert TrustList.load([ca_path]).check(leaf) is None  # issued by a trusted CA
    assert TrustList.load([pinned.certificate]).check(leaf) is not None  # a leaf is no CA
    assert "does not exist" in (TrustList.load([tmp_path / "missing"]).check(leaf) or "")
