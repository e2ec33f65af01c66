"""The domain modules' pure logic, without I/O: energy integration, alarm rules, lift faults, HVAC checks,
the billing ledger's idempotency, and configuration errors that name the field."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge.sdk.kit import ModuleConfigError, parse_config
from edge.sdk.store import ModuleStore
from edge.sdk.tenancy import TenantContext, tenant_scope
from modules.alarms.config import AlarmsConfig, Rule
from modules.alarms.rules import Track, evaluate, observe
from modules.billing import ledger
from modules.billing.config import BillingConfig
from modules.billing.events import EnergyInterval
from modules.hvac.config import HvacConfig, ScheduleEntry
from modules.hvac.logic import CycleTrack, ZoneTrack, cycle_observe, scheduled, zone_observe, zone_off_for
from modules.lifts.config import LiftsConfig
from modules.lifts.watch import LiftTrack, conditions
from modules.lifts.watch import observe as lift_observe
from modules.solar.energy import Settings, add_sample, close_until
from modules.solar.energy import Track as InverterTrack

T0 = 1_800_000_000.0  # aligned to 300 s: 2027-01-15T08:00:00Z


# ---- solar ---------------------------------------------------------------------------------------------


def test_constant_power_integrates_to_exact_interval_energy() -> None:
    track, settings = InverterTrack(), Settings(interval=300, max_gap=120)
    closed = []
    for k in range(0, 61):  # 10 minutes of 6 kW, a sample every 10 s
        closed += add_sample(track, T0 + 10 * k, 6000.0, None, settings)
    assert [(i.start, round(i.energy_wh, 6), i.covered_s) for i in closed] == [
        (T0, 500.0, 300.0),
        (T0 + 300, 500.0, 300.0),
    ]


def test_a_ramp_splits_at_the_boundary_by_interpolated_power() -> None:
    track, settings = InverterTrack(), Settings(interval=300, max_gap=1000)
    add_sample(track, T0 + 200, 0.0, None, settings)
    closed = add_sample(track, T0 + 400, 2000.0, None, settings)  # 0 -> 2 kW across the boundary at +300
    closed += close_until(track, T0 + 600, settings)
    first, second = closed
    assert first.energy_wh == pytest.approx(1000 / 2 * 100 / 3600, abs=1e-3)  # 0..1 kW over 100 s
    assert second.energy_wh == pytest.approx(3000 / 2 * 100 / 3600, abs=1e-3)  # 1..2 kW over 100 s


def test_an_offline_gap_is_bridged_by_the_counter_and_reported_as_recovered() -> None:
    track, settings = InverterTrack(), Settings(interval=300, max_gap=60, max_power_w=10_000)
    add_sample(track, T0, 3600.0, 10_000.0, settings)
    assert close_until(track, T0 + 700, settings) == []  # offline: time moves on, nothing is known
    # back after 900 s: the counter rose 900 Wh; 600 of them belong to intervals that were already due
    (late,) = add_sample(track, T0 + 900, 3600.0, 10_900.0, settings)
    assert (late.start, late.energy_wh, late.recovered_wh) == (T0 + 600, 900.0, 600.0)
    assert late.methods == ("counter",) and late.covered_s == 300.0


def test_an_implausible_counter_or_a_reset_is_not_trusted_across_a_gap() -> None:
    settings = Settings(interval=300, max_gap=60, max_power_w=10_000)
    track = InverterTrack()
    add_sample(track, T0, 1000.0, 50_000.0, settings)
    add_sample(track, T0 + 200, 1000.0, 100.0, settings)  # counter went backwards: a reset, gap unknown
    assert track.counter_resets == 1 and track.gaps == 1
    add_sample(track, T0 + 210, 1000.0, 103.0, settings)
    (interval,) = close_until(track, T0 + 300, settings)
    assert interval.energy_wh == pytest.approx(
        1000 * 10 / 3600, abs=1e-3
    )  # only the 10 s both sides of which are known
    assert interval.counter_resets == 1 and interval.gaps == 1
    jump = InverterTrack()
    add_sample(jump, T0, 0.0, 0.0, settings)
    add_sample(jump, T0 + 100, 0.0, 5_000_000.0, settings)  # 5 MWh in 100 s from a 10 kW inverter
    assert jump.gaps == 1 and jump.wh == 0.0


def test_redelivered_samples_are_not_counted_twice() -> None:
    track, settings = InverterTrack(), Settings(interval=300, max_gap=120)
    add_sample(track, T0, 3600.0, None, settings)
    add_sample(track, T0 + 100, 3600.0, None, settings)
    add_sample(track, T0 + 100, 3600.0, None, settings)
    add_sample(track, T0 + 50, 3600.0, None, settings)
    assert track.wh == pytest.approx(100.0)


# ---- alarms --------------------------------------------------------------------------------------------


def test_high_limit_waits_for_the_delay_and_clears_only_past_the_hysteresis() -> None:
    rule = Rule(id="hot", point="t", high=60.0, hysteresis=2.0, delay=10.0)
    track = Track()
    events = []
    for at, value in [(0, 59), (1, 61), (5, 62), (11, 61), (12, 59), (13, 57.5)]:
        observe(track, value, "good", at)
        events += [(at, t.state) for t in evaluate(rule, track, at)]
    assert events == [(11, "raised"), (13, "cleared")]  # 59 is inside the limit but not past the hysteresis
    observe(track, 61, "good", 20)
    observe(track, 59, "good", 25)  # back before the delay ran out: nothing
    assert evaluate(rule, track, 40) == []


def test_stale_data_and_bad_quality_raise_after_their_time_and_clear_on_good_data() -> None:
    rule = Rule(id="feed", point="t", stale_after=30.0, bad_quality_after=20.0)
    track = Track()
    observe(track, 20.0, "good", 0)
    assert [t.condition for t in evaluate(rule, track, 31)] == ["stale"]
    observe(track, None, "bad", 32)
    assert [(t.condition, t.state) for t in evaluate(rule, track, 33)] == [("stale", "cleared")]
    assert [(t.condition, t.state) for t in evaluate(rule, track, 52)] == [("bad_quality", "raised")]
    observe(track, 21.0, "good", 53)
    assert [(t.condition, t.state) for t in evaluate(rule, track, 53)] == [("bad_quality", "cleared")]


def test_alarm_config_errors_name_the_field() -> None:
    with pytest.raises(ModuleConfigError) as info:
        parse_config(AlarmsConfig, {"rules": [{"id": "x", "point": "p", "high": 1, "low": 5}]}, "alarms")
    assert "modules.alarms.config.rules.0" in str(info.value) and "low (5.0) must be below high" in str(
        info.value
    )
    with pytest.raises(ModuleConfigError, match=r"modules\.alarms\.config\.rules\.0\.hysteresis"):
        parse_config(
            AlarmsConfig, {"rules": [{"id": "x", "point": "p", "high": 1, "hysteresis": -1}]}, "alarms"
        )


# ---- lifts ---------------------------------------------------------------------------------------------


def test_trips_door_cycles_and_counter_resets_are_counted() -> None:
    config, track = LiftsConfig(), LiftTrack()
    for at, values in enumerate([
        {"trip_counter": 10, "door_open": False},
        {"door_open": True, "trip_counter": 11},
        {"door_open": False},
        {"door_open": True, "trip_counter": 13},
        {"trip_counter": 2},  # controller replaced: a reset, not -11 trips
        {"trip_counter": 3},
    ]):  # fmt: skip
        lift_observe(track, values, float(at), config)
    assert (track.trips, track.door_cycles, track.counter_resets) == (4, 2, 1)


def test_stuck_between_floors_and_a_door_that_stays_open_hold_only_after_their_time() -> None:
    config = LiftsConfig(stuck_after=30, door_open_max=60)
    track = LiftTrack()
    lift_observe(track, {"position": 7.5, "speed": 0.0, "door_open": False, "fault_code": 31}, 100.0, config)
    held = {c.kind: c.holds for c in conditions(track, 110.0, config)}
    assert held == {"stuck": False, "door": False, "fault_code": True}
    assert {c.kind: c.holds for c in conditions(track, 131.0, config)}["stuck"]
    lift_observe(track, {"position": 6.0, "fault_code": 0, "door_open": True}, 140.0, config)  # re-levelled
    held = {c.kind: c.holds for c in conditions(track, 150.0, config)}
    assert held == {"stuck": False, "door": False, "fault_code": False}
    door = next(c for c in conditions(track, 201.0, config) if c.kind == "door")
    assert door.holds and "door open for 61 s" in door.cause


# ---- hvac ----------------------------------------------------------------------------------------------


def test_a_zone_off_setpoint_counts_from_when_it_left_the_band() -> None:
    zone = ZoneTrack()
    zone_observe(zone, 21.0, 21.0, 0.0, 1.5)
    zone_observe(zone, 22.6, None, 10.0, 1.5)
    assert zone_off_for(zone, 100.0) == 90.0
    zone_observe(zone, None, 22.0, 120.0, 1.5)  # setpoint raised: on setpoint again
    assert zone_off_for(zone, 130.0) is None


def test_starts_within_the_window_are_counted_for_short_cycling() -> None:
    cycle = CycleTrack()
    for at, running in enumerate([False, True, False, True, False, True, True, False, True]):
        cycle_observe(cycle, running, at * 100.0, window=450.0)
    assert cycle.starts == [500.0, 800.0]  # the start at 100 and 300 fell out of the window


def test_the_schedule_entry_in_force_comes_from_today_or_an_earlier_day() -> None:
    entries = (
        ScheduleEntry(at="07:00", value=21.0, days=("mon", "tue", "wed", "thu", "fri")),
        ScheduleEntry(at="19:00", value=None),
    )
    wednesday_8 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
    assert scheduled(entries, wednesday_8) == ("2026-11-25T07:00", 21.0)
    assert scheduled(entries, wednesday_8.replace(hour=6)) == ("2026-11-24T19:00", None)
    sunday_noon = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    assert scheduled(entries, sunday_noon) == ("2026-11-28T19:00", None)
    with pytest.raises(ModuleConfigError, match=r"schedules\.0\.entries\.0\.at"):
        parse_config(
            HvacConfig,
            {
                "schedules": [
                    {"tenant": "a", "site": "s", "device": "d", "entries": [{"at": "7h", "value": 1}]}
                ]
            },
            "hvac",
        )


# ---- billing -------------------------------------------------------------------------------------------


async def test_the_ledger_books_each_interval_once_and_per_tenant(tmp_path: Path) -> None:
    config = BillingConfig(
        price_per_kwh=0.30, tenants={"acme": {"price_per_kwh": 0.20, "site_prices": {"roof": 0.10}}}
    )
    acme, globex = TenantContext("acme"), TenantContext("globex")

    def interval(start: str, wh: float) -> EnergyInterval:
        return EnergyInterval(site="roof", device="inv-1", start=start, end=start, energy_wh=wh)

    async with ModuleStore(tmp_path / "billing.sqlite", "billing") as store:
        with tenant_scope(acme):
            price, currency = config.tariff("acme", "roof")
            assert await ledger.record(
                store, "e1", interval("2026-11-30T23:55:00Z", 2000), price, currency, "UTC"
            )
            assert not await ledger.record(
                store, "e1", interval("2026-11-30T23:55:00Z", 2000), price, currency, "UTC"
            )
            # the same interval published again under a new event id replaces the entry, it does not add
            assert await ledger.record(
                store, "e2", interval("2026-11-30T23:55:00Z", 2500), price, currency, "UTC"
            )
            assert await ledger.record(
                store, "e3", interval("2026-12-01T00:00:00Z", 1000), price, currency, "UTC"
            )
            (november,) = await ledger.report(store, "2026-11")
            assert (november["energy_wh"], november["amount"], november["intervals"]) == (2500.0, 0.25, 1)
            assert (await ledger.report(store, "2026-12"))[0]["energy_wh"] == 1000.0
            # in Berlin, 23:55 UTC on 30 November is already December
            assert ledger.period_of(datetime(2026, 11, 30, 23, 55, tzinfo=UTC), "Europe/Berlin") == "2026-12"
        with tenant_scope(globex):
            assert await ledger.report(store, "2026-11") == []
            assert config.tariff("globex", "roof") == (0.30, "EUR")
