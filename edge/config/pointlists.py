"""Point lists: CSV files (and a driver's own formats, such as BACnet EDE) in and out of profiles.

The CSV column set is the driver's point model: a header row names the fields (`name`, `unit`, `scale`,
`writable`, `description`, ... and the driver's addressing fields such as `table`, `address`, `type` for Modbus
or `object_type`, `instance` for BACnet), each further row is one point. An empty cell leaves the field at its
default; a cell starting with `{` or `[` is JSON (Modbus `labels`, BACnet `states`). Two optional columns
say where a row belongs: `device` (a file listing several devices) and `driver` (checked against the driver
imported for). Every row is validated with the driver's point model, and every problem is reported with its
line number before anything is written. Export writes every configured point in the same column set.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tomlkit
from pydantic import ValidationError

from edge.config.suggest import did_you_mean
from edge.sdk.drivers import (
    DeviceSpec,
    Driver,
    PointList,
    PointListError,
    PointRow,
    SupportsPointLists,
)
from edge.sdk.errors import ConfigError, ConfigIssue
from edge.sdk.points import PointConfig

__all__ = [
    "CSV_FORMAT",
    "PLACEMENT_COLUMNS",
    "export_csv",
    "formats_of",
    "profile_text",
    "read_csv",
    "read_point_list",
    "rows_of_device",
    "validate_rows",
]

CSV_FORMAT = "csv"
PLACEMENT_COLUMNS = ("device", "driver")  # where a row belongs, not a point field


def formats_of(driver: Driver) -> tuple[str, ...]:
    """The point list formats `driver` reads and writes: CSV, plus its own."""
    extra = driver.point_list_formats if isinstance(driver, SupportsPointLists) else ()
    return (CSV_FORMAT, *extra)


def read_point_list(
    path: Path, driver: Driver, driver_name: str, format: str | None = None, companion: Path | None = None
) -> PointList:
    """Parse the file at `path` in `format` (by default its suffix: `.csv`, `.ede`...), with `companion`, a
    file it refers to (an EDE file's state texts); raises ConfigError naming the file and each bad line."""
    chosen = (format or path.suffix.lstrip(".") or CSV_FORMAT).lower()
    known = formats_of(driver)
    if chosen not in known:
        raise ConfigError(
            [
                ConfigIssue(
                    str(path),
                    "format",
                    f"{chosen!r} is not a {driver_name} point list format ({', '.join(known)})",
                )
            ]
        )
    text = path.read_text(encoding="utf-8-sig")  # spreadsheets often save a byte order mark
    companion_text = companion.read_text(encoding="utf-8-sig") if companion is not None else None
    try:
        if chosen == CSV_FORMAT:
            if companion is not None:
                raise ConfigError(
                    [ConfigIssue(str(companion), "", "a CSV point list takes no companion file")]
                )
            return read_csv(text, driver, driver_name)
        assert isinstance(driver, SupportsPointLists)
        return driver.read_point_list(text, chosen, companion_text)
    except PointListError as exc:
        where = str(companion) if exc.in_companion and companion is not None else str(path)
        raise ConfigError(
            [ConfigIssue(where, f"line {line}", reason) for line, reason in exc.problems]
        ) from None


def read_csv(text: str, driver: Driver, driver_name: str) -> PointList:
    """The rows of a CSV point list (comma or semicolon separated, as spreadsheets save them)."""
    dialect = (
        csv.excel if text.split("\n", 1)[0].count(",") >= text.split("\n", 1)[0].count(";") else _Semicolon
    )
    reader = csv.reader(io.StringIO(text), dialect)
    header = [cell.strip() for cell in next(reader, [])]
    fields = list(driver.point_model.model_fields)
    problems: list[tuple[int, str]] = []
    if "name" not in header:
        problems.append((1, f"the header row needs a 'name' column (columns: {', '.join(fields)})"))
    for column in header:
        if column not in fields and column not in PLACEMENT_COLUMNS:
            hint = did_you_mean(column, fields)
            problems.append(
                (
                    1,
                    f"unknown column {column!r}"
                    + (
                        f" (did you mean {hint!r}?)"
                        if hint
                        else f"; {driver_name} point fields: {', '.join(fields)}"
                    ),
                )
            )
    if problems:
        raise PointListError(problems)
    rows: list[PointRow] = []
    for cells in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) > len(header):
            problems.append((line, f"{len(cells)} cells, the header has {len(header)} columns"))
            continue
        values: dict[str, Any] = {}
        for column, cell in zip(header, cells, strict=False):
            cell = cell.strip()
            if not cell:
                continue
            try:
                values[column] = json.loads(cell) if cell[0] in "{[" else cell
            except json.JSONDecodeError as exc:
                problems.append((line, f"{column}: not valid JSON ({exc.msg})"))
        row_driver = values.pop("driver", driver_name)
        if row_driver != driver_name:
            problems.append((line, f"driver is {row_driver!r}, importing for {driver_name!r}"))
        rows.append(PointRow(line, values, str(values.pop("device", ""))))
    if problems:
        raise PointListError(problems)
    return PointList(rows)


class _Semicolon(csv.excel):
    delimiter = ";"


def rows_of_device(points: PointList, device: str | None, file: str) -> list[PointRow]:
    """The rows of one device of a file listing several; all rows when it lists one. Raises ConfigError."""
    found = list(dict.fromkeys(row.device for row in points.rows))
    if device is None:
        if len(found) > 1:
            raise ConfigError(
                [
                    ConfigIssue(
                        file,
                        "device",
                        f"lists {len(found)} devices ({', '.join(found)}): choose one with --device",
                    )
                ]
            )
        return points.rows
    rows = [row for row in points.rows if row.device == device]
    if not rows:
        raise ConfigError(
            [ConfigIssue(file, "device", f"no rows of device {device!r} (devices: {', '.join(found)})")]
        )
    return rows


def validate_rows(rows: Sequence[PointRow], driver: Driver, file: str) -> tuple[PointConfig, ...]:
    """Every row as the driver's point, or ConfigError with every problem and its line."""
    issues: list[ConfigIssue] = []
    points: list[tuple[int, PointConfig]] = []
    for row in rows:
        where = f"line {row.line}" + (f" (point {row.fields['name']!r})" if "name" in row.fields else "")
        try:
            points.append((row.line, driver.point_model.model_validate(row.fields)))
        except ValidationError as exc:
            for error in exc.errors():
                field = ".".join(str(p) for p in error["loc"])
                issues.append(ConfigIssue(file, f"{where}.{field}" if field else where, error["msg"]))
    first_line: dict[str, int] = {}
    for line, point in points:
        if point.name in first_line:
            issues.append(
                ConfigIssue(
                    file, f"line {line}", f"point {point.name!r} is also on line {first_line[point.name]}"
                )
            )
        first_line.setdefault(point.name, line)
    for line, point in points:
        if point.scale_factor is not None and point.scale_factor not in first_line:
            issues.append(
                ConfigIssue(file, f"line {line}.scale_factor", f"no point named {point.scale_factor!r}")
            )
    if not rows:
        issues.append(ConfigIssue(file, "points", "the file lists no points"))
    if issues:
        raise ConfigError(issues)
    return tuple(point for _, point in points)


def profile_text(
    name: str, driver_name: str, description: str, points: Sequence[dict[str, Any]], source: str
) -> str:
    """A profile file (TOML) with these point tables; `source` says in a comment where it came from."""
    doc = tomlkit.document()
    doc.add(tomlkit.comment(f"{source}. Review before use."))
    header = tomlkit.table()
    header.update({"name": name, "driver": driver_name, "description": description})
    doc["profile"] = header
    tables = tomlkit.aot()
    for point in points:
        tables.append(tomlkit.item({k: _toml_value(v) for k, v in point.items() if v is not None}))
    doc["points"] = tables
    return tomlkit.dumps(doc)


def point_fields(point: PointConfig) -> dict[str, Any]:
    """A point's fields as a profile writes them: the name, then whatever differs from the defaults."""
    return {"name": point.name} | point.model_dump(exclude_defaults=True, mode="json")


def _toml_value(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _toml_value(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_toml_value(v) for v in value]
    return value


def export_csv(devices: Sequence[DeviceSpec]) -> str:
    """Every point of `devices`, one row each, with `device` and `driver` columns first."""
    rows = [
        {"device": device.name, "driver": device.driver} | point_fields(point)
        for device in devices
        for point in device.points
    ]
    columns = list(dict.fromkeys(column for row in rows for column in row))
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return out.getvalue()


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list | tuple):
        return json.dumps(value)
    return str(value)
