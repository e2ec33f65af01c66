"""The SDK's exported names are pinned: a removal is a breaking change, an addition is a documented decision.

Every module under edge/sdk says what it exports in `__all__` (the gRPC stubs generated from module.proto
excepted: the .proto is their contract); the exports per module must equal PINNED below.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

import edge.sdk
from edge.sdk.version import KERNEL_API_VERSION

GENERATED = ("edge.sdk.proto.module_pb2", "edge.sdk.proto.module_pb2_grpc")  # grpc_tools.protoc output
NOT_REEXPORTED = (
    "edge.sdk.certs",
    "edge.sdk.cli",
    "edge.sdk.runner",
    "edge.sdk.transaction",
    "edge.sdk.sqlite_thread",
    "edge.sdk.ticks",
    "edge.sdk.grid",
    "edge.sdk.ratelimit",
    "edge.sdk.proto",
)  # imported by their full name

PINNED: dict[str, tuple[str, ...]] = {
    "edge.sdk.backoff": ("Backoff",),
    "edge.sdk.certs": (
        "CertificateFiles",
        "application_uri",
        "create_application_certificate",
        "default_dns_names",
        "load_certificate",
        "load_private_key",
        "thumbprint",
        "write_application_certificate",
        "write_private_file",
    ),
    "edge.sdk.commands": ("ModuleCommand", "command_of", "result_data"),
    "edge.sdk.drivers": (
        "DeviceSession",
        "DeviceSpec",
        "DiscoveredDevice",
        "Driver",
        "PointList",
        "PointListError",
        "PointRow",
        "PushReceiver",
        "RawValue",
        "ReadPlan",
        "SupportsDiscovery",
        "SupportsPointLists",
        "SupportsPush",
        "SupportsValueRange",
    ),
    "edge.sdk.errors": (
        "ConfigError",
        "ConfigIssue",
        "DeviceError",
        "DeviceUnreachable",
        "EdgeError",
        "NoTenantContext",
        "OutboxFull",
        "PluginError",
        "SubscriptionUnsupported",
        "UnknownTarget",
        "WriteRejected",
    ),
    "edge.sdk.events": (
        "ASSET_FAILED",
        "AssetFailedData",
        "CLOUD_RESULT",
        "COMMAND_RESULT",
        "CloudEventEnvelope",
        "CloudResultData",
        "CommandResultData",
        "DEVICE_STATUS",
        "DeviceStatusData",
        "Event",
        "MODULE_COMMAND",
        "MODULE_COMMAND_RESULT",
        "ModuleCommandData",
        "ModuleCommandResultData",
        "OUTBOX_DROPPED",
        "OutboxDroppedData",
        "PointSample",
        "SEQUENCE_DIGITS",
        "SPECVERSION",
        "StoredEvent",
        "TELEMETRY",
        "TelemetryData",
        "json_schemas",
        "make_event",
        "new_event_id",
        "rfc3339",
    ),
    "edge.sdk.cli": (
        "CONFIG_OPTION",
        "ConfiguredGateway",
        "OutboxInspector",
        "fail",
        "open_gateway_config",
        "open_module_store",
        "open_outbox",
        "send_module_command",
        "summary_row",
        "uplink_status",
    ),
    "edge.sdk.kit": (
        "AlertBook",
        "EventBatches",
        "ModuleConfigError",
        "Sample",
        "Telemetry",
        "as_bool",
        "parse_config",
    ),
    "edge.sdk.modules": (
        "BatchHandler",
        "EventHandler",
        "Health",
        "Module",
        "ModuleContext",
        "PointWriter",
        "RETRY_BASE",
        "RETRY_CAP",
        "Rejected",
        "RetryLater",
        "TickHandler",
        "module_consumer",
    ),
    "edge.sdk.ratelimit": ("FairScheduler", "TokenBucket"),
    "edge.sdk.points": (
        "BrickClass",
        "HaystackTag",
        "Name",
        "PointConfig",
        "PointFault",
        "Qualified",
        "Quality",
        "Scalar",
        "ValueKind",
    ),
    "edge.sdk.proto": ("TOKEN_HEADER",),
    "edge.sdk.tags": ("Role", "name_words", "propose_tags"),
    "edge.sdk.transaction": ("async_transaction", "finish_even_if_cancelled", "transaction"),
    "edge.sdk.versions": (
        "ADAPTORS",
        "DEPRECATED_API",
        "Adaptor",
        "AdaptorRegistry",
        "Deprecation",
        "deprecate_event_version",
        "deprecated_api",
        "deprecation_of",
    ),
    "edge.sdk.ticks": ("TenantTicks", "Tick"),
    "edge.sdk.grid": (
        "HOUSEKEEPING_PHASE",
        "housekeeping_tick",
        "next_tick",
        "sleep_until",
        "sleep_until_next_tick",
    ),
    "edge.sdk.runner": ("IsolatedContext", "main", "run"),
    "edge.sdk.sqlite_thread": ("SqliteThread",),
    "edge.sdk.store": ("ModuleStore", "ModuleStoreError", "StateStore", "module_store_path"),
    "edge.sdk.tenancy": ("TenantContext", "current_tenant", "maybe_tenant", "tenant_scope"),
    "edge.sdk.version": ("KERNEL_API_VERSION",),
}


def exports(package: str, generated: tuple[str, ...] = ()) -> tuple[dict[str, tuple[str, ...]], list[str]]:
    """Each module's `__all__` under `package`, and what is wrong: a module without one, a name it lacks."""
    found: dict[str, tuple[str, ...]] = {}
    problems: list[str] = []
    root = importlib.import_module(package)
    for info in pkgutil.walk_packages(root.__path__, f"{package}."):
        if info.name in generated:
            continue
        module = importlib.import_module(info.name)
        names = getattr(module, "__all__", None)
        if names is None:
            problems.append(f"{info.name} has no __all__: every module of the SDK says what it exports")
            continue
        found[info.name] = tuple(sorted(names))
        problems += [
            f"{info.name}.__all__ names {n}, which it does not define" for n in names if n not in vars(module)
        ]
    return found, problems


def changes(actual: Mapping[str, tuple[str, ...]], pinned: Mapping[str, tuple[str, ...]]) -> list[str]:
    """One message per exported name removed from or added to the pinned surface."""
    messages = []
    for module in sorted(pinned.keys() | actual.keys()):
        now, then = set(actual.get(module, ())), set(pinned.get(module, ()))
        messages += [
            f"{module}.{name} was removed: a breaking change under SemVer. Keep it, deprecated with "
            "edge.sdk.versions.deprecated_api (a warning for at least two minor releases), and remove it "
            f"only in the next major KERNEL_API_VERSION (edge/sdk/version.py, now {KERNEL_API_VERSION}), "
            "in CHANGELOG.md; then drop it from PINNED in tests/sdk/test_sdk_surface.py"
            for name in sorted(then - now)
        ]
        messages += [
            f"{module}.{name} is new in the SDK (a minor KERNEL_API_VERSION change): add it to PINNED in "
            "tests/sdk/test_sdk_surface.py and document it in docs/sdk.md"
            for name in sorted(now - then)
        ]
    return messages


def test_every_sdk_module_has_all_and_the_exported_names_are_the_pinned_ones() -> None:
    found, problems = exports("edge.sdk", GENERATED)
    assert problems == []
    messages = changes(found, PINNED)
    assert messages == [], "the SDK surface changed:\n" + "\n".join(messages)


def test_edge_sdk_reexports_every_submodule_export() -> None:
    found, _ = exports("edge.sdk", GENERATED)
    expected = {n for module, names in found.items() if not module.startswith(NOT_REEXPORTED) for n in names}
    assert set(edge.sdk.__all__) == expected
    for module, names in found.items():
        for name in names if not module.startswith(NOT_REEXPORTED) else ():
            assert getattr(edge.sdk, name) is getattr(sys.modules[module], name), f"edge.sdk.{name}"


def test_a_removal_and_an_addition_each_fail_with_what_to_do() -> None:
    pinned = {"edge.sdk.kit": ("AlertBook", "Ticker"), "edge.sdk.version": ("KERNEL_API_VERSION",)}
    actual = {"edge.sdk.kit": ("AlertBook", "every"), "edge.sdk.version": ("KERNEL_API_VERSION",)}
    removed, added = changes(actual, pinned)
    assert removed.startswith("edge.sdk.kit.Ticker was removed: a breaking change under SemVer")
    assert "two minor releases" in removed and "next major KERNEL_API_VERSION" in removed
    assert added.startswith("edge.sdk.kit.every is new in the SDK") and "docs/sdk.md" in added
    assert changes({"edge.sdk.cli": ("app",), **pinned}, pinned) == [
        "edge.sdk.cli.app is new in the SDK (a minor KERNEL_API_VERSION change): add it to PINNED in "
        "tests/sdk/test_sdk_surface.py and document it in docs/sdk.md"
    ]


def test_a_module_without_all_or_naming_what_it_lacks_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "fakesdk"
    package.mkdir()
    (package / "__init__.py").write_text('__all__ = ["Thing"]\nThing = 1\n')
    (package / "bare.py").write_text("def helper() -> None: ...\n")
    (package / "typo.py").write_text('__all__ = ["Helper"]\ndef helper() -> None: ...\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    found, problems = exports("fakesdk")
    assert found == {"fakesdk.typo": ("Helper",)}
    assert problems == [
        "fakesdk.bare has no __all__: every module of the SDK says what it exports",
        "fakesdk.typo.__all__ names Helper, which it does not define",
    ]
