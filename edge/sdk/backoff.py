"""Capped exponential backoff with full jitter, shared by every reconnect loop in the gateway."""

from __future__ import annotations

import random

__all__ = [
    "Backoff",
]


# Jitter needs no generator of its own: a Random holds 2.5 KB of state, and the building's 105 devices keep
# ~230 backoffs (0.6 MB). Pass `rng` for a reproducible sequence.
_SHARED = random.Random()


class Backoff:
    def __init__(self, initial: float = 0.5, cap: float = 30.0, rng: random.Random | None = None) -> None:
        self.initial = initial
        self.cap = cap
        self.attempts = 0
        self._rng = rng or _SHARED

    def next_delay(self) -> float:
        """Delay before the next attempt: uniform in [initial/2, min(cap, initial * 2**attempts)]."""
        ceiling = min(self.cap, self.initial * 2**self.attempts)
        self.attempts += 1
        return self._rng.uniform(min(self.initial / 2, ceiling), ceiling)

    def reset(self) -> None:
        self.attempts = 0
