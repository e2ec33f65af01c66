"""Per-tenant energy ledger (see module.py, ledger.py, README.md)."""

from modules.billing.module import Billing

__all__ = ["Billing"]
