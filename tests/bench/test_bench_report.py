"""The stress ramp's target line: a step delivered within a window's edge effects counts as sustained at its
offered rate; a step the gateway only partly kept up with counts at what it delivered."""

from __future__ import annotations

from bench.report import sustained_rate


def test_a_step_delivered_to_the_window_edge_is_sustained_at_its_offered_rate() -> None:
    assert sustained_rate({"offered_points_per_s": 100_000, "delivered_points_per_s": 99_995.66}) == 100_000


def test_a_step_kept_up_with_only_partly_counts_at_what_was_delivered() -> None:
    assert sustained_rate({"offered_points_per_s": 100_000, "delivered_points_per_s": 96_000}) == 96_000
    assert sustained_rate(None) == 0.0
