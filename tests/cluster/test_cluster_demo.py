"""`edge demo --cluster`: three instances, a private PostgreSQL, Mosquitto and the Modbus simulator; the
commands it prints work, and Ctrl-C stops everything cleanly."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_cluster_demo_runs_three_instances_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge.cli",
            "demo",
            "--cluster",
            "--devices",
            "4",
            "--data-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    printed = ""
    try:
        deadline = time.monotonic() + 120
        assert demo.stdout is not None
        while "Ctrl-C stops everything" not in printed and time.monotonic() < deadline:
            line = demo.stdout.readline()
            if not line:
                break
            printed += line
        status = re.search(r"EDGE_PG_PASSWORD=(\S+) \S+ cluster status -c (\S+)", printed)
        assert status is not None, printed
        shown = subprocess.run(
            [sys.executable, "-m", "edge.cli", "cluster", "status", "-c", status.group(2), "--json"],
            cwd=ROOT,
            env={**os.environ, "EDGE_PG_PASSWORD": status.group(1)},
            capture_output=True,
            text=True,
            timeout=30,
        )
        state = json.loads(shown.stdout)[0]
        assert [(m["instance"], m["state"]) for m in state["members"]] == [(n, "alive") for n in "abc"]
        assert sum(m["devices"] for m in state["members"]) == 4
        assert sorted(state["leaders"]) == ["acme", "globex"]
        os.killpg(demo.pid, signal.SIGINT)
        out, _ = demo.communicate(timeout=90)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait(10)
    assert demo.returncode == 0, printed + out
