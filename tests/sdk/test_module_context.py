"""One module API: the in-process and the isolated context both are `edge.sdk.ModuleContext`, for mypy and at
run time, and show a module nothing more, so a module never depends on where it runs."""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Any

import grpc
from mypy import api as mypy_api

from edge.module_host.context import InProcessContext
from edge.outbox.sqlite import SqliteOutbox
from edge.sdk.modules import ModuleContext
from edge.sdk.proto import module_pb2 as pb
from edge.sdk.proto import module_pb2_grpc as pb_grpc
from edge.sdk.runner import IsolatedContext
from edge.sdk.store import ModuleStore
from edge.sdk.tenancy import TenantContext

ROOT = Path(__file__).resolve().parents[2]

_STATIC = """
from __future__ import annotations

from edge.module_host.context import InProcessContext
from edge.sdk.modules import ModuleContext
from edge.sdk.runner import IsolatedContext


def in_process(context: InProcessContext) -> ModuleContext:
    return context


def isolated(context: IsolatedContext) -> ModuleContext:
    return context


class Planted(InProcessContext):  # proves the check can fail: every() without its handler
    def every(self, interval: float) -> None:  # type: ignore[override]
        return None


def planted(context: Planted) -> ModuleContext:
    return context  # planted
"""


def _protocol_methods() -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member, eval_str=True)
        for name, member in vars(ModuleContext).items()
        if not name.startswith("_") and callable(member)
    }


def _public(context: object) -> set[str]:
    return {name for name in dir(context) if not name.startswith("_")}


def test_both_contexts_are_a_module_context_for_mypy(tmp_path: Path) -> None:
    snippet = tmp_path / "contexts.py"
    snippet.write_text(_STATIC)
    out, err, status = mypy_api.run(
        [
            str(snippet),
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--follow-imports=silent",
            "--cache-dir",
            str(ROOT / ".mypy_cache"),
        ]
    )
    errors = [line for line in out.splitlines() if ": error:" in line]
    planted = _STATIC.splitlines().index("    return context  # planted") + 1
    assert status == 1, out + err
    assert len(errors) == 1 and f"{snippet.name}:{planted}: error" in errors[0], out  # the planted one only
    assert 'expected "ModuleContext"' in errors[0] and "def every(self, interval: float) -> None" in out


async def test_both_contexts_show_a_module_exactly_the_protocol(tmp_path: Path) -> None:
    tenants = (TenantContext("acme", entitlements=frozenset({"solar"})),)
    store = ModuleStore(tmp_path / "peak.sqlite", "peak")
    in_process = InProcessContext("peak", {"limit": 1}, tenants, SqliteOutbox(tmp_path / "o.db"), "gw", store)
    reply = pb.RegisterReply(
        gateway_id="gw",
        tenants=[pb.Tenant(id="acme", locale="en", entitlements=["solar"])],
        config_json='{"limit": 1}',
        store_path=str(tmp_path / "peak.sqlite"),
    )
    async with grpc.aio.insecure_channel(f"unix:{tmp_path / 'none.sock'}") as channel:  # never called
        stub = pb_grpc.ModuleHostStub(channel)  # type: ignore[no-untyped-call]
        isolated = IsolatedContext("peak", reply, stub, "token")
    methods = _protocol_methods()
    attributes: dict[str, Any] = typing.get_type_hints(ModuleContext)
    assert set(methods) >= {"subscribe", "subscribe_batches", "every", "publish", "write_point"}
    for context in (in_process, isolated):
        kind = type(context).__name__
        assert _public(context) == set(methods) | set(attributes), kind  # nothing a module could lean on
        for name, signature in methods.items():
            assert inspect.signature(getattr(type(context), name), eval_str=True) == signature, (kind, name)
        for name, hint in attributes.items():
            assert isinstance(getattr(context, name), typing.get_origin(hint) or hint), (kind, name)
        assert context.name == "peak" and context.config == {"limit": 1} and context.gateway_id == "gw"
        assert [t.tenant_id for t in context.tenants] == ["acme"]
        assert context.consumer_name("uplink") == "module:peak:uplink"
