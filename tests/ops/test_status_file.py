"""The status file on a data disk that fills up: the gateway's once-a-second status write must neither stop the
gateway (it did: ENOSPC ended `edge run` at 5,000 events/s, tests/reliability/test_real_rates.py T06) nor flood
the log; it says once that it fails and once that it works again."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from edge.cli.run_cmd import StatusFile
from edge.ops.status import StatusSnapshot, status_file
from tests.reliability.harness import DiskFull


def _snapshot(stored: int) -> StatusSnapshot:
    return StatusSnapshot(
        uptime=1.0,
        devices=1,
        devices_up=1,
        points_read=stored,
        events_stored=stored,
        events_published=stored,
        point_updates_published=0,
        backlog=0,
        module_backlogs={},
        bus_connected=True,
        commands_accepted=0,
        commands_rejected=0,
        inbound_oversize_rejected=0,
        task_restarts=0,
        limits={},
        downlink={},
    )


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[DiskFull]:
    with DiskFull.mounted(tmp_path / "disk", 1 << 20) as disk:
        yield disk


def test_a_full_data_disk_makes_the_status_stale_not_the_gateway_stop(
    small_disk: DiskFull, caplog: pytest.LogCaptureFixture
) -> None:
    path = status_file(small_disk.path)
    status = StatusFile(path)
    status.write(_snapshot(1))
    small_disk.fill()
    with caplog.at_level(logging.WARNING, logger="edge.cli.run_cmd"):
        for stored in range(2, 7):  # five seconds of a full disk
            status.write(_snapshot(stored))
        assert orjson.loads(path.read_bytes())["events_stored"] == 1  # the last good one, whole
        small_disk.free()
        status.write(_snapshot(7))
    assert orjson.loads(path.read_bytes())["events_stored"] == 7
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert "cannot write the status file" in messages[0] and "No space left" in messages[0]
    assert "written again" in messages[1]
