"""The ledger: one entry per (site, device, interval) and a running total per (billing period, site).

Keys in the module's store (tenant-scoped):
    entry/<period>/<site>/<device>/<interval start>   {"wh", "amount", "price"}
    total/<period>/<site>                             {"energy_wh", "amount", "currency", "intervals", ...}
An entry is keyed by the interval it bills, and the total moves by the difference to the entry it replaces,
so the same interval delivered twice (a redelivered event, or the solar module publishing an interval again
after a restart) never counts twice; the event id guards the whole update as well (`apply(once=...)`).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from edge.sdk import StateStore
from modules.billing.events import EnergyInterval


def period_of(start: datetime, zone: str) -> str:
    return start.astimezone(ZoneInfo(zone)).strftime("%Y-%m")


async def record(
    store: StateStore, event_id: str, interval: EnergyInterval, price: float, currency: str, zone: str
) -> bool:
    """Book one interval; False when this event was booked before."""
    period = period_of(interval.start, zone)
    start = interval.start.isoformat()
    entry_key = f"entry/{period}/{interval.site}/{interval.device}/{start}"
    total_key = f"total/{period}/{interval.site}"
    previous = await store.get(entry_key) or {"wh": 0.0, "amount": 0.0}
    amount = round(interval.energy_wh / 1000.0 * price, 6)
    total = await store.get(total_key) or {
        "period": period,
        "site": interval.site,
        "energy_wh": 0.0,
        "amount": 0.0,
        "currency": currency,
        "intervals": 0,
        "devices": [],
        "first_start": start,
        "last_end": interval.end.isoformat(),
    }
    total["energy_wh"] = round(total["energy_wh"] + interval.energy_wh - previous["wh"], 6)
    total["amount"] = round(total["amount"] + amount - previous["amount"], 6)
    total["intervals"] += 0 if _booked_before(previous) else 1
    total["currency"] = currency
    total["price_per_kwh"] = price
    total["devices"] = sorted({*total["devices"], interval.device})
    total["first_start"] = min(total["first_start"], start)
    total["last_end"] = max(total["last_end"], interval.end.isoformat())
    total["updated"] = time.time()
    entry = {"wh": interval.energy_wh, "amount": amount, "price": price}
    return await store.apply({entry_key: entry, total_key: total}, once=event_id)


def _booked_before(previous: dict[str, Any]) -> bool:
    return "price" in previous


async def report(store: StateStore, period: str) -> list[dict[str, Any]]:
    """The current tenant's totals of one billing period ("2026-11"), one row per site."""
    return [value for _, value in await store.items(f"total/{period}/")]
