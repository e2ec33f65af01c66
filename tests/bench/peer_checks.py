"""What every peer's end-to-end result must show, whatever the peer."""

from __future__ import annotations

from bench.peer_common import PeerResult


def assert_delivered_and_measured(result: PeerResult, offered: float) -> None:
    """Every offered point arrived (±20 % for window edges on a loaded machine), and every figure is sane."""
    assert result.offered_points_per_s == offered
    assert 0.8 * offered <= result.delivered_points_per_s <= 1.2 * offered
    assert result.cpu_us_per_point > 0
    assert 20 < result.peak_rss_mb < 1000
    assert result.p50_latency_ms is not None and result.p99_latency_ms is not None
    assert 0 <= result.p50_latency_ms <= result.p99_latency_ms < 10_000
