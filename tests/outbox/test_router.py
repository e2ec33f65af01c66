"""The per-tenant outbox router: every member of SqliteOutbox is routed on purpose, and a dedicated tenant's
calls read and write its own file only (never the shared one), against real SQLite files."""

from __future__ import annotations

import inspect
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from edge.outbox import Dropped, OutboxStore, RetentionPolicy
from edge.outbox.postgres import PgPlace, PostgresOutbox
from edge.outbox.router import TENANT_SCOPED, OutboxRouter, tiered_outbox
from edge.outbox.sqlite import SqliteOutbox
from edge.sdk.events import TELEMETRY, Event, make_event
from edge.sdk.tenancy import TenantContext, tenant_scope

ACME = TenantContext("acme")  # dedicated: tenants/acme.db
GLOBEX = TenantContext("globex")  # shared: outbox.db


def _event(tenant: str, sequence: int, device: str = "inv-01") -> Event:
    return make_event(
        type=TELEMETRY,
        source=f"/gw/modbus/{device}",
        subject=f"site/{device}",
        tenant=tenant,
        time=1000.0 + sequence,
        data={"n": sequence},
        device=device,
        sequence=sequence,
    )


def _public_members(cls: type, instance: object) -> set[str]:
    """Public methods and properties of the class, and the public attributes its instances set."""
    members = {name for name in dir(cls) if not name.startswith("_")}
    return members | {name for name in vars(instance) if not name.startswith("_")}


def _interface() -> set[str]:
    """Every member of the interface callers type against."""
    return {n for n in dir(OutboxStore) if not n.startswith("_")} | set(OutboxStore.__annotations__)


# What a backend may have beyond the interface: where its rows live, which only the registry reads.
# a backend's own: its location, and the cluster's commit fence (edge/cluster/fence.py sets it per store)
BACKEND_OWN = {"path", "place", "fence", "fenced_events"}


def _backends() -> list[tuple[type, object]]:
    return [
        (SqliteOutbox, SqliteOutbox(Path("unused.db"))),
        (PostgresOutbox, PostgresOutbox(PgPlace("postgresql://u@127.0.0.1:1/db", None, "edge"))),
    ]


def test_every_member_of_the_interface_is_routed_on_purpose() -> None:
    explicit = {name for name in vars(OutboxRouter) if not name.startswith("_")}
    assert _interface() - TENANT_SCOPED - explicit == set(), "classify them in edge/outbox/router.py"
    assert not (explicit & TENANT_SCOPED)
    # nothing is listed that the interface does not have (store_of is the router's own)
    assert TENANT_SCOPED | explicit - {"store_of"} <= _interface()
    for name in explicit - {"store_of"}:  # written-out members keep the backends' call signature
        ours, theirs = getattr(OutboxRouter, name), getattr(SqliteOutbox, name, None)
        if callable(theirs):
            assert inspect.signature(ours) == inspect.signature(theirs), name


def test_each_backend_is_exactly_the_interface() -> None:
    """A public member added to a backend and not to `OutboxStore` (so not routed either) is caught here."""
    for cls, instance in _backends():
        assert _public_members(cls, instance) - BACKEND_OWN == _interface(), cls.__name__

    class Grown(SqliteOutbox):
        async def purge_everything(self) -> None: ...

    assert _public_members(Grown, Grown(Path("unused.db"))) - BACKEND_OWN - _interface() == {
        "purge_everything"
    }


async def test_an_unclassified_name_fails_loudly_instead_of_reaching_the_shared_file(tmp_path: Path) -> None:
    outbox = tiered_outbox(tmp_path / "outbox.db", {"acme": tmp_path / "acme.db"})
    assert isinstance(outbox, OutboxRouter)
    with tenant_scope(ACME), pytest.raises(AttributeError, match="does not route 'purge_everything'"):
        getattr(outbox, "purge_everything")  # noqa: B009


def test_without_a_dedicated_tenant_the_outbox_is_the_plain_store(tmp_path: Path) -> None:
    assert type(tiered_outbox(tmp_path / "outbox.db", {})) is SqliteOutbox


def _dump(db: Path) -> dict[str, list[tuple[object, ...]]]:
    with sqlite3.connect(db) as conn:
        tables = [str(t) for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in tables}


async def _seed_shared(path: Path) -> None:
    """globex's events, and acme rows left in the shared file (as after a tier change without a move)."""
    outbox = SqliteOutbox(path)
    await outbox.open()
    with tenant_scope(GLOBEX):
        for n in range(1, 5):
            await outbox.append_durable(_event("globex", n))
        outbox.set_cursor("mqtt", 1)
    with tenant_scope(ACME):
        for n in range(1, 4):
            await outbox.append_durable(_event("acme", n))
        outbox.set_cursor("mqtt", 7)
        outbox.set_cursor("module:billing:0", 7)
        outbox.record_success("cloud", 99)
    await outbox.close()


async def test_every_tenant_scoped_call_of_a_dedicated_tenant_touches_only_its_own_file(
    tmp_path: Path,
) -> None:
    shared_db, acme_db = tmp_path / "outbox.db", tmp_path / "tenants" / "acme.db"
    await _seed_shared(shared_db)
    before = _dump(shared_db)
    outbox = tiered_outbox(
        shared_db, {"acme": acme_db}, retention={"acme": RetentionPolicy(max_age=3600)}, commit_interval=0.001
    )
    await outbox.open()
    try:
        with tenant_scope(ACME):
            for n in range(1, 5):
                await outbox.append_durable(_event("acme", n))
            await outbox.append(_event("acme", 5))
            await outbox.append_report(_event("acme", 6, device="_gateway"))
            await outbox.append_durable(_event("acme", 7))
            first = (await outbox.read_after(0, 1))[0]
            outbox.hold("mqtt", ["acme"])

            # one call per tenant-scoped member, in an order where each result tells which file answered
            calls: dict[str, Callable[[], Awaitable[object] | object]] = {
                "last_position": lambda: outbox.last_position,
                "count": outbox.count,
                "usage": outbox.usage,
                "first_position_since": lambda: outbox.first_position_since(0),
                "read_after": lambda: outbox.read_after(0, 100),
                "read_device": lambda: outbox.read_device("inv-01", [TELEMETRY]),
                "set_cursor": lambda: outbox.set_cursor("mqtt", 2),
                "cursor": lambda: outbox.cursor("mqtt"),
                "backlog": lambda: outbox.backlog("mqtt"),
                "holders": outbox.holders,
                "delivered_floor": outbox.delivered_floor,
                "record_success": lambda: outbox.record_success("cloud", 2),
                "record_failure": lambda: outbox.record_failure("cloud", "receiver said 503"),
                "consumer_status": lambda: outbox.consumer_status("cloud"),
                "dead_letter": lambda: outbox.dead_letter("module:x:0", [(first, "refused")]),
                "request_replay": lambda: outbox.request_replay(),
                "dead_letters": lambda: outbox.dead_letters(replay_only=True),
                "resolve_dead_letters": lambda: outbox.resolve_dead_letters("module:x:0", [first.position]),
                "policy": outbox.policy,
                "now": outbox.now,
                "take_refused": outbox.take_refused,
                "position_freeing": lambda: outbox.position_freeing(1),
                "delete_through": lambda: outbox.delete_through(1, 2, None),
                "record_drops": lambda: outbox.record_drops("max_bytes:refused", Dropped(1, 10)),
                "drop_totals": outbox.drop_totals,
                "inspector": lambda: outbox.inspector().close(),
            }
            assert set(calls) == TENANT_SCOPED  # a member added to TENANT_SCOPED gets its call here
            results = {}
            for name, call in calls.items():
                result = call()
                results[name] = await result if inspect.isawaitable(result) else result
    finally:
        await outbox.close()

    # the answers come from acme's own file: 7 events at positions 1..7, not the shared file's rows
    assert results["last_position"] == 7 and results["count"] == 7 and results["usage"][0] == 7
    assert results["first_position_since"] == 1
    assert [e.tenant for e in results["read_after"]] == ["acme"] * 7  # type: ignore[attr-defined]
    assert len(results["read_device"]) == 6  # type: ignore[arg-type]
    assert results["cursor"] == 2 and results["backlog"] == 5 and results["delivered_floor"] == 2
    assert results["holders"] == frozenset({"mqtt"})
    status = results["consumer_status"]
    assert status.delivered == 2 and status.last_error == "receiver said 503"  # type: ignore[attr-defined]
    assert results["request_replay"] == 1 and len(results["dead_letters"]) == 1  # type: ignore[arg-type]
    assert results["policy"] == RetentionPolicy(max_age=3600)
    assert results["position_freeing"] == 1
    assert results["drop_totals"] == {"max_bytes:refused": (1, 10)}
    with tenant_scope(ACME), outbox.inspector() as inspector:  # the status view opens acme's own file
        assert inspector.last_position() == 7 and inspector.usage()[0] == 6

    assert _dump(shared_db) == before  # not one row of the shared file changed
    mine = _dump(acme_db)
    assert {row[2] for row in mine["outbox"]} == {"acme"} and len(mine["outbox"]) == 6  # position 1 deleted
    assert mine["cursors"] == [("mqtt", "acme", 2)]
    assert [row[:2] for row in mine["consumer_status"]] == [("cloud", "acme")]
    assert mine["dead_letters"] == []  # resolved
    assert [row[:2] for row in mine["drop_counts"]] == [("acme", "max_bytes:refused")]


async def test_fan_out_members_reach_every_store_and_read_each_tenant_from_its_own_file(
    tmp_path: Path,
) -> None:
    shared_db, acme_db = tmp_path / "outbox.db", tmp_path / "acme.db"
    await _seed_shared(shared_db)  # leaves a stale acme cursor and sequences 1..3 in the shared file
    outbox = tiered_outbox(shared_db, {"acme": acme_db}, commit_interval=0.001)
    committed: list[str] = []
    outbox.add_commit_listener(lambda events, _: committed.extend(e.tenant for e in events))
    await outbox.open()
    try:
        with tenant_scope(ACME):
            for n in range(10, 12):
                await outbox.append_durable(_event("acme", n))
            outbox.set_cursor("module:billing:0", 1)
        with tenant_scope(GLOBEX):
            await outbox.append_durable(_event("globex", 5))
            outbox.set_cursor("module:billing:0", 3)
        assert sorted(committed) == ["acme", "acme", "globex"]
        assert outbox.committed_events == 3 and outbox.commits == 3 and outbox.queued == 0
        assert outbox.location == str(shared_db)
        assert await outbox.last_sequences() == {("acme", "inv-01"): 11, ("globex", "inv-01"): 5}

        outbox.hold("mqtt", ["acme", "globex"])
        router = outbox
        assert isinstance(router, OutboxRouter)
        with tenant_scope(ACME):
            assert router.store_of("acme").holders() == {"mqtt"}
            assert router.store_of("globex").holders() == frozenset()
        outbox.release("mqtt", ["acme"])
        with tenant_scope(ACME):
            assert outbox.holders() == frozenset()
        with tenant_scope(GLOBEX):
            assert outbox.holders() == {"mqtt"}
    finally:
        await outbox.close()
    outbox = tiered_outbox(shared_db, {"acme": acme_db})
    await outbox.open()
    try:  # cursors are persisted per file; the stale acme cursor of the shared file is not listed
        assert sorted(await outbox.stored_cursors("module:")) == [
            ("module:billing:0", "acme"),
            ("module:billing:0", "globex"),
        ]
    finally:
        await outbox.close()
