"""`edge billing report`: a tenant's energy ledger for one billing period, read from the billing module's
own store, opened read-only (works while the gateway runs: SQLite in WAL mode, or PostgreSQL).

Mounted by the kernel's CLI through the `edge.cli` entry point `billing` (see edge.sdk.cli)."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import typer

from edge.sdk import StateStore, TenantContext, tenant_scope
from edge.sdk.cli import CONFIG_OPTION, fail, open_gateway_config, open_module_store
from modules.billing import ledger

app = typer.Typer(no_args_is_help=True, help="Billing ledgers of the billing module.")


@app.command("report")
def report(
    tenant: str = typer.Option(..., "--tenant", "-t", help="Tenant whose ledger to print."),
    period: str = typer.Option(..., "--period", "-p", help="Billing period, YYYY-MM."),
    config: Path = CONFIG_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON."),
) -> None:
    """Energy and amount per site of one tenant in one billing period."""
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", period):
        raise typer.BadParameter("expected YYYY-MM, e.g. 2026-11", param_hint="--period")
    gateway = open_gateway_config(config)
    if tenant not in gateway.tenants:
        fail(f"no tenant {tenant!r} in {config}")
    try:
        store = open_module_store(gateway, "billing")
    except FileNotFoundError as exc:
        fail(f"no ledger yet ({exc}: has the billing module run?)")
    rows = asyncio.run(_read(store, tenant, period))
    if as_json:
        typer.echo(json.dumps(rows, indent=2, sort_keys=True))
        return
    typer.echo(_table(tenant, period, rows))


async def _read(store: StateStore, tenant: str, period: str) -> list[dict[str, Any]]:
    async with store:
        with tenant_scope(TenantContext(tenant)):
            return await ledger.report(store, period)


def _table(tenant: str, period: str, rows: list[dict[str, Any]]) -> str:
    lines = [f"Energy ledger of {tenant}, {period}"]
    if not rows:
        return lines[0] + ": no energy booked"
    lines.append(f"{'site':<20} {'kWh':>12} {'price/kWh':>10} {'amount':>12} {'intervals':>9}  devices")
    total_kwh = 0.0
    totals: dict[str, float] = {}
    for row in rows:
        kwh = row["energy_wh"] / 1000.0
        total_kwh += kwh
        totals[row["currency"]] = totals.get(row["currency"], 0.0) + row["amount"]
        lines.append(
            f"{row['site']:<20} {kwh:>12.3f} {row.get('price_per_kwh', 0):>10.4f} "
            f"{row['amount']:>8.2f} {row['currency']:<3} {row['intervals']:>9}  {len(row['devices'])}"
        )
    amounts = ", ".join(f"{amount:.2f} {currency}" for currency, amount in sorted(totals.items()))
    lines.append(f"{'total':<20} {total_kwh:>12.3f} {'':>10} {amounts:>12}")
    return "\n".join(lines)
