"""HVAC monitoring and schedules (see module.py, logic.py, README.md)."""

from modules.hvac.module import Hvac

__all__ = ["Hvac"]
