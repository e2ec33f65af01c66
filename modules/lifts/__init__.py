"""Lift monitoring (see module.py, watch.py, README.md)."""

from modules.lifts.module import Lifts

__all__ = ["Lifts"]
