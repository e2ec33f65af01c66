"""Solar energy per inverter and interval, offline and under-performing inverters (see module.py, README.md)."""

from modules.solar.module import Solar

__all__ = ["Solar"]
