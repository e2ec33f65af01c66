"""The soak's short version (the long one: `python -m tests.reliability.soak --minutes 60`, see
docs/reliability.md): a few random faults in ~15 s, then every acked event accounted for."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.soak import healthy, soak

pytestmark = pytest.mark.timeout(180)


async def test_short_soak_with_random_faults_loses_nothing(tmp_path: Path) -> None:
    order = ("kill_gateway", "cloud_outage", "kill_broker")
    summary = await soak(tmp_path, seconds=9, fault_every=2.5, seed=3, devices=4, hold=1.5, sequence=order)
    print(summary)
    assert len(summary["faults"]) >= 1
    assert summary["report"]["acked"] > 0
    assert healthy(summary), summary
    assert summary["wal_mb_max"] < 64  # T24's WAL bound
    assert summary["fds_end"] <= summary["fds_start"] + 10  # no fd leak within one run
