"""CSV point lists (issue 23): a spreadsheet's point list becomes a profile and a device entry that reads the
inverter simulator; every bad line is named before anything is written; `edge point export` writes every
configured point, and a device's rows import back to the same points."""

from __future__ import annotations

import csv
import io
import json
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from simulators.modbus_inverter import InverterSimulator
from tests.helpers import free_port, run_edge, small_config

# As a spreadsheet saves it in a comma-decimal locale: semicolons, a byte order mark, a blank line.
INVERTER_CSV = """\ufeffname;table;address;type;length;unit;scale_factor;labels;writable;publish;description
manufacturer;holding;40004;string;16;;;;;;Common model manufacturer
W_SF;holding;40084;sunssf;;;;;;false;
W;holding;40083;int16;;W;W_SF;;;;AC power
St;holding;40107;uint16;;;;"{""1"": ""off"", ""2"": ""sleeping"", ""4"": ""mppt""}";;;Operating state

limit;holding;40300;uint16;;%;;;true;;Power limit
"""


@pytest_asyncio.fixture
async def inverter() -> AsyncIterator[InverterSimulator]:
    async with InverterSimulator(1, free_port(), sim_time="12:00", update_interval=3600) as sim:
        yield sim


async def import_inverter(points: Path, profile: Path, device: str, config: Path, port: int) -> None:
    code, _, err = await run_edge(
        "point", "import", str(points), "--driver", "modbus", "-o", str(profile),
        "--add-device", device, "--tenant", "acme", "--site", "hq", "--config", str(config),
        "--connection", "host=127.0.0.1", "--connection", f"port={port}",
    )  # fmt: skip
    assert code == 0, err


async def test_a_csv_point_list_becomes_a_profile_and_a_device_that_reads(
    tmp_path: Path, inverter: InverterSimulator
) -> None:
    points = tmp_path / "inverter points.csv"
    points.write_text(INVERTER_CSV, encoding="utf-8")
    config = small_config(tmp_path, "gw-csv")
    await import_inverter(points, tmp_path / "inv.toml", "inv-1", config, inverter.port)
    profile = tomllib.loads((tmp_path / "inv.toml").read_text())
    assert profile["profile"]["name"] == "inv"
    st = next(p for p in profile["points"] if p["name"] == "St")
    assert st["labels"] == {"1": "off", "2": "sleeping", "4": "mppt"}
    code, out, err = await run_edge("device", "test", "inv-1", "--config", str(config), "--json")
    assert code == 0, out + err
    rows = {row["point"]: row for row in json.loads(out)}
    assert rows["manufacturer"]["value"] == "EdgeSim"
    assert rows["W"]["value"] == round(inverter.state(1).ac_power_w)
    assert rows["St"]["value"] == "mppt" and rows["limit"]["unit"] == "%"


async def test_every_bad_line_is_named_and_nothing_is_written(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "name,table,adress,type\n"  # line 1: a misspelled column
        "a,holding,1,int16\n"
    )
    code, _, err = await run_edge(
        "point", "import", str(bad), "--driver", "modbus", "-o", str(tmp_path / "x.toml")
    )
    assert code == 2
    assert "bad.csv: line 1: unknown column 'adress' (did you mean 'address'?)" in err
    bad.write_text(
        "name,table,address,type,labels,scale_factor\n"
        "a,holding,1,int16,,\n"
        "b,holding,70000,int16,,\n"  # line 3
        "c,coil,2,int16,,\n"  # line 4
        'a,holding,5,uint16,"{1: off}",\n'  # line 5: bad JSON
        "d,holding,6,int16,,d_sf\n"  # line 6: no such scale factor point
        "a,holding,7,uint16,,\n"  # line 7: a again
    )
    code, _, err = await run_edge(
        "point", "import", str(bad), "--driver", "modbus", "-o", str(tmp_path / "x.toml")
    )
    assert code == 2 and not (tmp_path / "x.toml").exists()
    assert "bad.csv: line 5: labels: not valid JSON" in err
    bad.write_text(bad.read_text().replace('"{1: off}"', ""))
    code, _, err = await run_edge(
        "point", "import", str(bad), "--driver", "modbus", "-o", str(tmp_path / "x.toml")
    )
    assert code == 2 and not (tmp_path / "x.toml").exists()
    assert "bad.csv: line 3 (point 'b').address: Input should be less than or equal to 65535" in err
    assert "bad.csv: line 4 (point 'c'): Value error, a coil point holds one bit" in err
    assert "bad.csv: line 5: point 'a' is also on line 2" in err
    assert "bad.csv: line 6.scale_factor: no point named 'd_sf'" in err
    assert "bad.csv: line 7: point 'a' is also on line 2" in err


async def test_export_lists_every_configured_point_and_a_device_imports_back(
    tmp_path: Path, inverter: InverterSimulator
) -> None:
    points = tmp_path / "points.csv"
    points.write_text(INVERTER_CSV, encoding="utf-8")
    config = small_config(tmp_path, "gw-csv")
    for name in ("inv-1", "inv-2"):
        await import_inverter(points, tmp_path / "inv.toml", name, config, inverter.port)
    code, out, err = await run_edge("point", "export", "--config", str(config))
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 10 and {r["device"] for r in rows} == {"inv-1", "inv-2"}
    assert rows[0]["driver"] == "modbus" and list(rows[0])[:3] == ["device", "driver", "name"]
    assert json.loads(next(r for r in rows if r["name"] == "St")["labels"])["4"] == "mppt"
    exported = tmp_path / "all.csv"
    exported.write_text(out)
    code, _, err = await run_edge(
        "point", "import", str(exported), "--driver", "modbus", "-o", str(tmp_path / "y.toml")
    )
    assert code == 2 and "lists 2 devices (inv-1, inv-2): choose one with --device" in err
    code, _, err = await run_edge(
        "point",
        "import",
        str(exported),
        "--driver",
        "modbus",
        "--device",
        "inv-2",
        "-o",
        str(tmp_path / "y.toml"),
    )
    assert code == 0, err
    assert (
        tomllib.loads((tmp_path / "y.toml").read_text())["points"]
        == tomllib.loads((tmp_path / "inv.toml").read_text())["points"]
    )
