"""The billing module: `org.edgegw.energy.produced` in, a per-tenant ledger by site and period out.

The ledger lives in the module's store (see `ledger`), so `edge billing report --tenant T --period 2026-11`
reads it from `{data_dir}/modules/billing.sqlite`, also while the gateway runs. An event that is not a valid
energy interval is logged with its reason and not booked.
"""

from __future__ import annotations

import logging

import orjson
from pydantic import ValidationError

from edge.sdk import Health, ModuleContext, ModuleStore, StoredEvent, parse_config
from modules.billing import ledger
from modules.billing.config import BillingConfig
from modules.billing.events import ENERGY_PRODUCED, EnergyInterval

log = logging.getLogger("edge.module.billing")


class Billing:
    config_model = BillingConfig  # checked by the config loader too: errors name file and field

    def __init__(self) -> None:
        self._booked = 0
        self._duplicates = 0
        self._invalid = 0

    async def on_init(self, context: ModuleContext) -> None:
        self._context = context
        self._config = parse_config(BillingConfig, context.config, context.name)
        context.subscribe([ENERGY_PRODUCED], self._handle)

    async def on_enable(self) -> None: ...

    async def on_disable(self) -> None: ...

    async def on_health_check(self) -> Health:
        detail = (
            f"{self._booked} intervals booked, {self._duplicates} duplicates ignored, {self._invalid} invalid"
        )
        return Health(True, detail)

    @staticmethod
    async def report(store: ModuleStore, period: str) -> list[dict[str, object]]:
        """The current tenant's ledger of one period (what `edge billing report` prints)."""
        return await ledger.report(store, period)

    async def _handle(self, event: StoredEvent) -> None:
        try:
            interval = EnergyInterval.model_validate(orjson.loads(event.body).get("data"))
        except (ValidationError, orjson.JSONDecodeError) as exc:
            self._invalid += 1
            log.warning("event %s is not a valid energy interval, not booked: %s", event.id, exc)
            return
        price, currency = self._config.tariff(event.tenant, interval.site)
        booked = await ledger.record(
            self._context.store, event.id, interval, price, currency, self._config.timezone
        )
        if booked:
            self._booked += 1
        else:
            self._duplicates += 1
