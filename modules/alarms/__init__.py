"""Threshold alarms on any point (see module.py and README.md)."""

from modules.alarms.module import Alarms

__all__ = ["Alarms"]
