"""The billing module's configuration: the tariff, per tenant and site, and the billing time zone."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator


class TenantTariff(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    price_per_kwh: float | None = Field(default=None, ge=0.0, description="Overrides the default price.")
    currency: str | None = Field(default=None, min_length=3, max_length=3)
    site_prices: dict[str, float] = Field(default_factory=dict, description="Price per kWh by site id.")

    @field_validator("site_prices")
    @classmethod
    def _not_negative(cls, prices: dict[str, float]) -> dict[str, float]:
        for site, price in prices.items():
            if price < 0:
                raise ValueError(f"price of site {site!r} is negative")
        return prices


class BillingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    price_per_kwh: float = Field(default=0.0, ge=0.0, description="Price of one kWh unless overridden.")
    currency: str = Field(default="EUR", min_length=3, max_length=3)
    timezone: str = Field(default="UTC", description="Billing periods are calendar months in this zone.")
    tenants: dict[str, TenantTariff] = Field(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, zone: str) -> str:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {zone!r}") from None
        return zone

    def tariff(self, tenant: str, site: str) -> tuple[float, str]:
        """(price per kWh, currency) for one tenant's site."""
        own = self.tenants.get(tenant)
        if own is None:
            return self.price_per_kwh, self.currency
        price = own.site_prices.get(
            site, own.price_per_kwh if own.price_per_kwh is not None else self.price_per_kwh
        )
        return price, own.currency or self.currency
