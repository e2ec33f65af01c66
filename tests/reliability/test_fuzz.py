"""T12/T13, fuzzing with Hypothesis: every decoder and parser that meets outside input returns a value or raises
its own typed error, and none takes more than a second on one input.

Targets: Modbus register decoding (any valid point over any registers), BACnet and OPC UA value mapping (any
primitive, any status code), the CloudEvents envelope of inbound events, the MQTT command parser (any topic,
any payload, including non-UTF-8, deep nesting and empty topics) and the configuration loader (any text, and
valid configurations with random values). `EDGE_FUZZ_EXAMPLES` sets the examples per target (default 25; the
long run in docs/reliability.md uses 20 000).
"""

from __future__ import annotations

import json
import math
import os
import string
import struct
import tempfile
from pathlib import Path
from typing import Any

import pydantic
import tomlkit
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from drivers.bacnet import values as bacnet_values
from drivers.modbus.config import WIDTH, ModbusPoint
from drivers.modbus.decode import decode
from drivers.opcua import values as opcua_values
from edge.bus.topics import Topics
from edge.config import load_config
from edge.devices.commands import CommandRejected, WriteRequest, parse_write_request
from edge.plugins import PluginRegistry
from edge.sdk.errors import ConfigError
from edge.sdk.events import CloudEventEnvelope
from edge.sdk.points import PointFault, Qualified

EXAMPLES = int(os.environ.get("EDGE_FUZZ_EXAMPLES", "25"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=1000,  # ms: no input may take more than a second
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    derandomize=EXAMPLES <= 25,  # the suite's run is reproducible; long runs explore
)
SCALARS = (bool, int, float, str, type(None))


def _is_result(value: Any) -> bool:
    if isinstance(value, Qualified):
        value = value.value
    return isinstance(value, (PointFault, *SCALARS))


# ------------------------------------------------------------------------------------------ Modbus


@st.composite
def modbus_points(draw: st.DrawFn) -> ModbusPoint:
    type_ = draw(st.sampled_from([t for t in WIDTH if t != "bool"] + ["string"]))
    spec: dict[str, Any] = {"name": "p", "address": draw(st.integers(0, 100)), "type": type_}
    spec["word_order"] = draw(st.sampled_from([None, "big", "little"]))
    spec["byte_order"] = draw(st.sampled_from([None, "big", "little"]))
    if type_ == "string":
        spec["length"] = draw(st.integers(1, 20))
    if type_ in ("uint16", "int16", "acc16") and draw(st.booleans()):
        spec["bit"] = draw(st.integers(0, 15))
        spec["bits"] = draw(st.integers(1, 16 - spec["bit"]))
    if type_ not in ("float32", "float64", "string") and draw(st.booleans()):
        spec["labels"] = draw(st.dictionaries(st.integers(-5, 70000), st.text(max_size=5), max_size=4))
    spec["sunspec"] = draw(st.booleans())
    try:
        return ModbusPoint.model_validate(spec)
    except pydantic.ValidationError:
        assume(False)
        raise


@FUZZ
@given(point=modbus_points(), registers=st.lists(st.integers(0, 0xFFFF), min_size=0, max_size=130))
def test_modbus_decoding_returns_a_value_or_a_fault(point: ModbusPoint, registers: list[int]) -> None:
    if len(registers) < point.width:  # a short answer is refused before decoding (planner checks sizes)
        return
    value = decode(point, registers, 0)
    assert _is_result(value), value
    if isinstance(value, float):
        assert not math.isnan(value) or point.type in ("float32", "float64")


# ------------------------------------------------------------------------------------------ BACnet, OPC UA


def _bacnet_primitives() -> st.SearchStrategy[Any]:
    from bacpypes3.primitivedata import (
        BitString,
        Boolean,
        CharacterString,
        Double,
        Enumerated,
        Integer,
        Null,
        Real,
        Unsigned,
    )

    def build(kind: Any, value: Any) -> Any:
        try:
            return kind(value)
        except Exception:  # the library refuses the value itself: nothing a device could send us
            assume(False)

    wire_reals = st.binary(min_size=4, max_size=4).map(lambda b: struct.unpack(">f", b)[0])  # NaNs, inf
    return st.one_of(
        wire_reals.map(lambda v: build(Real, v)),
        st.floats().map(lambda v: build(Double, v)),
        st.integers(0, 2**32 - 1).map(lambda v: build(Unsigned, v)),
        st.integers(-(2**31), 2**31 - 1).map(lambda v: build(Integer, v)),
        st.booleans().map(lambda v: build(Boolean, v)),
        st.integers(0, 2**16).map(lambda v: build(Enumerated, v)),
        st.text(max_size=50).map(lambda v: build(CharacterString, v)),
        st.lists(st.integers(0, 1), max_size=40).map(lambda v: build(BitString, v)),
        st.just(Null(())),
        st.none(),
        st.text(max_size=20),
        st.binary(max_size=20),
        st.floats(),
        st.lists(st.integers(), max_size=3),
    )


@FUZZ
@given(value=_bacnet_primitives())
def test_bacnet_value_mapping_returns_a_value_or_a_fault(value: Any) -> None:
    assert _is_result(bacnet_values.scalar(value))


def test_bacnet_double_keeps_64_bit_precision_and_range() -> None:
    """Found by the fuzzer: a Double (LREAL) was rounded as a 32-bit REAL, losing digits, and one beyond the
    REAL range raised OverflowError out of the driver."""
    from bacpypes3.primitivedata import Double

    assert bacnet_values.scalar(Double(0.1234567890123)) == 0.1234567890123
    assert bacnet_values.scalar(Double(1e300)) == 1e300


def _opcua_values() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(),
        st.text(max_size=50),
        st.binary(max_size=50),
        st.datetimes(),
        st.uuids(),
        st.lists(st.integers(-100, 100), max_size=5),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=3),
    )


@FUZZ
@given(value=_opcua_values(), code=st.integers(0, 2**32 - 1))
def test_opcua_value_mapping_returns_a_value_or_a_fault(value: Any, code: int) -> None:
    from asyncua import ua

    try:
        dv = ua.DataValue(ua.Variant(value), ua.StatusCode(code))
    except Exception:  # asyncua cannot hold it: no server could send it
        assume(False)
        raise
    assert _is_result(opcua_values.to_raw(dv))
    assert _is_result(opcua_values.scalar(value))


# ------------------------------------------------------------------------------------------ events, commands

JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def envelopes(draw: st.DrawFn) -> bytes:
    """Raw bytes, or JSON near a CloudEvent (fields missing, of the wrong type, deep, or huge)."""
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.binary(max_size=300))
    if kind == 1:
        depth = draw(st.integers(1, 10_000))
        return b"[" * depth + b"]" * depth
    fields = {"specversion": "1.0", "id": "x", "source": "/s", "type": "t"}
    for key in draw(st.lists(st.sampled_from(sorted(fields)), max_size=4, unique=True)):
        del fields[key]
    event: dict[str, Any] = {
        **fields,
        **draw(
            st.dictionaries(
                st.sampled_from(["id", "source", "type", "specversion", "time", "subject", "data", "x"]),
                JSONISH,
                max_size=4,
            )
        ),
    }
    return json.dumps(event).encode()  # big integers and NaN included, as a careless sender writes them


@FUZZ
@given(raw=envelopes())
def test_cloudevent_envelope_rejects_with_a_validation_error_only(raw: bytes) -> None:
    try:
        event = CloudEventEnvelope.model_validate_json(raw)
    except pydantic.ValidationError:
        return
    assert event.specversion == "1.0" and event.id and event.source and event.type


TOPICS = Topics("edge")
LEVEL = st.text(alphabet=string.ascii_letters + "/+#é\0 .", max_size=12)


@FUZZ
@given(
    topic=st.one_of(
        st.just(""),
        st.builds(lambda *p: "edge/{}/cmd/{}/{}/{}/set".format(*p), LEVEL, LEVEL, LEVEL, LEVEL),
        st.text(max_size=80),
    ),
    payload=st.one_of(
        st.binary(max_size=200),
        JSONISH.map(lambda v: json.dumps(v).encode()),
        st.integers(1, 10_000).map(lambda d: b"[" * d + b"]" * d),
    ),
)
def test_command_parser_rejects_with_a_reason_only(topic: str, payload: bytes) -> None:
    try:
        request = parse_write_request(TOPICS, topic, payload)
    except CommandRejected as exc:
        assert str(exc)
        return
    assert isinstance(request, WriteRequest)
    assert request.value is None or isinstance(request.value, bool | int | float | str)


# ------------------------------------------------------------------------------------------ config loader

REGISTRY = PluginRegistry.from_entry_points()
BASE_CONFIG = {
    "gateway": {"id": "gw", "data_dir": "data"},
    "bus": {"mode": "external", "port": 1883},
    "tenants": [{"id": "acme"}],
    "sites": [{"id": "roof"}],
    "devices": [
        {
            "name": "inv",
            "driver": "modbus",
            "tenant": "acme",
            "site": "roof",
            "profile": "sunspec-inverter",
            "connection": {"host": "127.0.0.1", "port": 502, "unit_id": 1},
        }
    ],
}


def _load(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "edge.toml"
        path.write_text(text, encoding="utf-8", errors="surrogateescape")
        try:
            load_config(path, REGISTRY)
        except ConfigError as exc:
            assert exc.issues and all(i.file and i.reason for i in exc.issues)


@FUZZ
@given(text=st.text(max_size=400))
def test_config_loader_raises_config_errors_only_on_any_text(text: str) -> None:
    _load(text)


@st.composite
def mutated_configs(draw: st.DrawFn) -> str:
    import copy

    config = copy.deepcopy(BASE_CONFIG)
    paths = [
        ("gateway", "id"),
        ("bus", "port"),
        ("bus", "mode"),
        ("tenants", 0, "id"),
        ("sites", 0, "id"),
        ("devices", 0, "name"),
        ("devices", 0, "driver"),
        ("devices", 0, "tenant"),
        ("devices", 0, "poll_interval"),
        ("devices", 0, "profile"),
        ("devices", 0, "connection", "port"),
        ("devices", 0, "connection", "unit_id"),
        ("devices", 0, "connection", "host"),
    ]
    toml_values = st.recursive(
        st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=12),
        lambda c: (
            st.lists(c, max_size=3)
            | st.dictionaries(st.text(string.ascii_letters, min_size=1, max_size=5), c, max_size=3)
        ),
        max_leaves=6,
    )
    for path in draw(st.lists(st.sampled_from(paths), min_size=1, max_size=3)):
        node: Any = config
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = draw(toml_values)
    return tomlkit.dumps(config)


@FUZZ
@given(text=mutated_configs())
def test_config_loader_names_the_field_of_any_bad_value(text: str) -> None:
    _load(text)
