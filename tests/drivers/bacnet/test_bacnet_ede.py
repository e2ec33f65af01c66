"""BACnet EDE point lists (issue 23): an EDE file of the shape integrators exchange is imported into a profile
and a device entry, and `edge device test` reads the HVAC simulator's AHU with it; bad lines are refused with
their line numbers; `edge point export --format ede` writes a file the import reads back to the same points.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from drivers.bacnet.ede import read_ede
from simulators.bacnet_hvac import HvacSimulator
from tests.helpers import free_udp_port, run_edge, small_config

pytestmark = pytest.mark.asyncio(loop_scope="module")

BASE_IP = "127.0.23.10"

# An AHU controller's EDE export as a BMS integrator sends it: header block, the two comment lines, the device,
# analog/binary/multi-state objects with unit codes (62 degrees-celsius, 29 percent-relative-humidity,
# 98 percent, 53 pascals), settable flags, state text references, and objects that carry no present value
# to read (a schedule, a trend log, a notification class).
AHU_EDE = """\
PROJECT_NAME;Riverside Offices - AHU retrofit
VERSION_OF_REFERENCEFILE;7
TIMESTAMP_OF_LAST_CHANGE;2026-10-02 14:31:07
AUTHOR_OF_LAST_CHANGE;J. Integrator
VERSION_OF_LAYOUT;2.2
#mandatory;mandatory;mandatory;mandatory;mandatory;optional;optional;optional;optional;optional;optional;optional;optional;optional;optional;optional
# keyname;device obj.-instance;object-name;object-type;object-instance;description;present-value-default;min-present-value;max-present-value;settable;supports COV;hi-limit;low-limit;state-text-reference;unit-code;vendor-specific-address
AHU01;1000;AHU01 Controller;8;1000;Rooftop AHU 1;;;;;;;;;;
AHU01'SAT;1000;AHU01 Supply Air Temp;0;1;Supply air temperature;;-40;80;N;Y;35;5;;62;AI1
AHU01'RAT;1000;AHU01 Return Air Temp;0;2;Return air temperature;;-40;80;N;Y;;;;62;AI2
AHU01'OAT;1000;AHU01 Outside Air Temp;0;4;Outside air temperature;;-40;80;N;Y;;;;62;AI4
AHU01'SAH;1000;AHU01 Supply Air RH;0;5;Supply air humidity;;0;100;N;Y;;;;29;AI5
AHU01'FDP;1000;AHU01 Filter dP;0;10;Filter differential pressure;;0;1000;N;Y;;;;53;AI10
AHU01'SFS;1000;AHU01 Supply Fan Speed;1;1;Supply fan speed command;0;0;100;Y;Y;;;;98;AO1
AHU01'SATSP;1000;AHU01 SAT Setpoint;2;1;Supply air temperature setpoint;16;10;30;Y;Y;;;;62;AV1
AHU01'SF;1000;AHU01 Supply Fan Status;3;1;Supply fan proof of flow;;;;N;Y;;;1;;BI1
AHU01'SFEN;1000;AHU01 Supply Fan Enable;5;1;Supply fan start/stop;;;;Y;Y;;;2;;BV1
AHU01'MODE;1000;AHU01 Operating Mode;19;1;AHU operating mode;2;1;4;Y;N;;;3;;MV1
AHU01'OCC;1000;AHU01 Occupancy Schedule;17;1;Weekly schedule;;;;Y;N;;;;;SCH1
AHU01'TL1;1000;AHU01 SAT Trend;20;1;Trend of supply air temperature;;;;N;N;;;;;TL1
AHU01'NC;1000;AHU01 Alarms;15;1;Notification class;;;;N;N;;;;;NC1
"""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sim() -> AsyncIterator[HvacSimulator]:
    simulator = HvacSimulator(0, BASE_IP, free_udp_port(BASE_IP), update_interval=0.5)
    await simulator.start()
    simulator.paused = True
    yield simulator
    await simulator.stop()


# The companion file: the texts the objects' state-text-reference column points at (1: fan status, 2: fan
# enable, 3: operating mode), with the same header lines.
HEADER = "".join(AHU_EDE.splitlines(keepends=True)[:5])  # the state texts file repeats the header lines
STATE_TEXTS = (
    HEADER
    + "#State Text Reference;Text 1;Text 2;Text 3;Text 4\n"
    + "1;off;on;;\n2;stop;start;;\n3;off;occupied;unoccupied;night-purge\n"
)


def config_file(tmp_path: Path) -> Path:
    return small_config(tmp_path, "gw-ede")


async def test_an_ede_file_becomes_a_profile_and_a_device_that_reads_the_simulator(
    tmp_path: Path, sim: HvacSimulator
) -> None:
    ahu = sim.ahu
    ede = tmp_path / "riverside-ahu01.ede"
    ede.write_text(AHU_EDE)
    config = config_file(tmp_path)
    code, out, err = await run_edge(
        "point", "import", str(ede), "--driver", "bacnet", "-o", str(tmp_path / "profiles" / "ahu01.toml"),
        "--add-device", "ahu-01", "--tenant", "acme", "--site", "hq", "--config", str(config),
        "--connection", f"address={ahu.address}",
        "--connection", f"local_address=127.0.0.1/8:{free_udp_port()}",
    )  # fmt: skip
    assert code == 0, err
    assert "wrote profile 'ahu01' with 10 points" in out
    for line, what in ((19, "schedule 1"), (20, "trend-log 1"), (21, "notification-class 1")):
        assert f"note: line {line}: {what} (" in err
    profile = tomllib.loads((tmp_path / "profiles" / "ahu01.toml").read_text())
    by_name = {p["name"]: p for p in profile["points"]}
    assert by_name["AHU01_Supply_Air_Temp"] == {
        "name": "AHU01_Supply_Air_Temp",
        "object_type": "analog-input",
        "instance": 1,
        "unit": "Cel",
        "description": "Supply air temperature",
        "brick": "Supply_Air_Temperature_Sensor",  # proposed from the object type, unit code and name
        "haystack": ["point", "supply", "air", "temp", "sensor"],
    }
    assert by_name["AHU01_SAT_Setpoint"]["brick"] == "Supply_Air_Temperature_Setpoint"
    assert by_name["AHU01_Supply_Fan_Status"]["brick"] == "Fan_Status"
    assert by_name["AHU01_Filter_dP"]["unit"] == "Pa" and by_name["AHU01_Supply_Air_RH"]["unit"] == "%"
    assert by_name["AHU01_SAT_Setpoint"]["writable"] is True
    assert "writable" not in by_name["AHU01_Supply_Fan_Status"]
    device = tomllib.loads(config.read_text())["devices"][0]
    assert device["connection"]["device_instance"] == ahu.instance  # from the EDE device line

    code, out, err = await run_edge("device", "test", "ahu-01", "--config", str(config), "--json")
    assert code == 0, out + err
    rows = {row["point"]: row for row in json.loads(out)}
    assert {row["quality"] for row in rows.values()} == {"good"}
    assert rows["AHU01_Supply_Air_Temp"]["value"] == pytest.approx(ahu.value("supply-air-temp"), abs=1e-4)
    assert rows["AHU01_Operating_Mode"]["value"] == ahu.value("operating-mode")
    assert rows["AHU01_Supply_Fan_Enable"]["value"] is True


async def test_the_state_texts_file_gives_binary_and_multistate_points_their_texts(
    tmp_path: Path, sim: HvacSimulator
) -> None:
    ede, texts = tmp_path / "ahu.ede", tmp_path / "ahu_StateTexts.csv"
    ede.write_text(AHU_EDE)
    texts.write_text(STATE_TEXTS)
    config = config_file(tmp_path)
    code, _, err = await run_edge(
        "point", "import", str(ede), "--companion", str(texts), "--driver", "bacnet",
        "-o", str(tmp_path / "ahu.toml"), "--add-device", "ahu-01", "--tenant", "acme", "--site", "hq",
        "--config", str(config), "--connection", f"address={sim.ahu.address}",
        "--connection", f"local_address=127.0.0.1/8:{free_udp_port()}",
    )  # fmt: skip
    assert code == 0, err
    points = {p["name"]: p for p in tomllib.loads((tmp_path / "ahu.toml").read_text())["points"]}
    assert points["AHU01_Supply_Fan_Status"]["states"] == ["off", "on"]
    assert points["AHU01_Operating_Mode"]["states"] == ["off", "occupied", "unoccupied", "night-purge"]
    code, out, err = await run_edge("device", "test", "ahu-01", "--config", str(config), "--json")
    assert code == 0, out + err
    rows = {row["point"]: row["value"] for row in json.loads(out)}
    assert rows["AHU01_Supply_Fan_Enable"] == "start" and rows["AHU01_Operating_Mode"] == "occupied"
    texts.write_text(STATE_TEXTS.replace("2;stop;start;;", "x;stop;start").replace("3;off;", "3;on;"))
    code, _, err = await run_edge(
        "point",
        "import",
        str(ede),
        "--companion",
        str(texts),
        "--driver",
        "bacnet",
        "-o",
        str(tmp_path / "x.toml"),
    )
    assert code == 2 and "ahu_StateTexts.csv: line 8: 'x' is not a state text reference number" in err


async def test_bad_lines_are_refused_with_their_numbers(tmp_path: Path) -> None:
    lines = AHU_EDE.splitlines()
    lines[8] = "AHU01'SAT;1000;AHU01 Supply Air Temp;0;x1;Supply air temperature;;;;N;Y;;;;62;"
    lines[9] = "AHU01'RAT;1000;AHU01 Return Air Temp;300;2"
    lines[10] = "AHU01'OAT;1000;;0;4"
    lines[11] = "AHU01'SAH;1000;AHU01 Supply Air RH;0;5;;;;;N;Y;;;;99999;"
    ede = tmp_path / "broken.ede"
    ede.write_text("\n".join(lines) + "\n")
    code, _, err = await run_edge(
        "point", "import", str(ede), "--driver", "bacnet", "-o", str(tmp_path / "p.toml")
    )
    assert code == 2 and not (tmp_path / "p.toml").exists()
    assert "(4 problem(s))" in err
    assert "broken.ede: line 9: object-instance 'x1' is not an instance number" in err
    assert "broken.ede: line 10: object-type '300' is not a standard BACnet object type" in err
    assert "broken.ede: line 11: an object line has 5 mandatory cells" in err
    assert "broken.ede: line 12: unit-code '99999' is not a BACnet engineering unit number" in err


async def test_export_writes_an_ede_file_the_import_reads_back(tmp_path: Path, sim: HvacSimulator) -> None:
    ede = tmp_path / "in.ede"
    ede.write_text(AHU_EDE)
    config = config_file(tmp_path)
    code, _, err = await run_edge(
        "point", "import", str(ede), "--driver", "bacnet", "-o", str(tmp_path / "ahu.toml"),
        "--add-device", "ahu-01", "--tenant", "acme", "--site", "hq", "--config", str(config),
        "--connection", f"address={sim.ahu.address}",
    )  # fmt: skip
    assert code == 0, err
    code, out, err = await run_edge("point", "export", "--format", "ede", "--config", str(config))
    assert code == 0, err
    assert (
        out.splitlines()[0] == "PROJECT_NAME;edge gateway" and out.splitlines()[4] == "VERSION_OF_LAYOUT;2.2"
    )
    assert "ahu-01;1000;ahu-01;8;1000;" in out
    assert (
        "ahu-01.AHU01_Supply_Air_Temp;1000;AHU01_Supply_Air_Temp;0;1;Supply air temperature;;;;N;Y;;;;62;"
        in out
    )
    again = read_ede(out)
    original = read_ede(AHU_EDE)
    assert [r.fields for r in again.rows] == [r.fields for r in original.rows]
    assert again.devices["1000"]["device_instance"] == 1000
