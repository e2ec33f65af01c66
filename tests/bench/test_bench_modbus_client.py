"""`python -m bench.modbus_client` runs against a real bank simulator process and reports every client."""

from __future__ import annotations

import pytest

from bench.modbus_client import CLIENTS, main


def test_each_client_reads_the_bank_and_gets_a_cpu_figure(capsys: pytest.CaptureFixture[str]) -> None:
    result = main(["--reads", "50", "--registers", "50", "--repeat", "1"])
    assert set(result) == set(CLIENTS)
    assert all(0 < us < 100_000 for us in result.values())
    out = capsys.readouterr().out
    assert "mbap:" in out and "pymodbus:" in out and "load average" in out
