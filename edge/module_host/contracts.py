"""Module contracts: what a module consumes and produces, checked against the kernel's event registry.

The registry is `edge.sdk.events` (data models and current `DATA_VERSIONS`) plus the published JSON Schemas in
docs/schemas (what modules were written against). `check_contracts` reports, per module, every consumed type
whose current version cannot reach the module (neither in its range nor through adaptors), every produced
schema that cannot be loaded, and every breaking change of a kernel schema against its published export.
The test suite runs it over every installed module, so a schema change that would break one fails CI.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from packaging.specifiers import SpecifierSet
from pydantic import BaseModel

from edge.plugins import Manifest


@cache
def load_schema(reference: str) -> type[BaseModel]:
    """The pydantic model named by "package.module:Model" (a manifest's `produces.schema`)."""
    module_name, _, attribute = reference.partition(":")
    if not attribute:
        raise ValueError(f"schema {reference!r} is not 'package.module:Model'")
    model = getattr(importlib.import_module(module_name), attribute, None)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise ValueError(f"schema {reference!r} is not a pydantic model")
    return model


def breaking_changes(published: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Changes of `current` that break a consumer written against `published` (object schemas).

    Breaking: a property removed, a property's type changed, a property newly required, extra properties
    newly forbidden. Adding an optional property is not breaking (consumers ignore what they do not read)."""
    problems: list[str] = []
    old_props: Mapping[str, Any] = published.get("properties", {})
    new_props: Mapping[str, Any] = current.get("properties", {})
    for name, old in old_props.items():
        new = new_props.get(name)
        if new is None:
            problems.append(f"property {name!r} removed")
        elif _shape(old) != _shape(new):
            problems.append(f"property {name!r} changed type: {_shape(old)} -> {_shape(new)}")
    for name in sorted(set(current.get("required", ())) - set(published.get("required", ()))):
        problems.append(f"property {name!r} is now required")
    old_defs: Mapping[str, Any] = published.get("$defs", {})
    new_defs: Mapping[str, Any] = current.get("$defs", {})
    for name, old in old_defs.items():
        if name not in new_defs:
            problems.append(f"definition {name!r} removed")
        else:
            problems += [f"{name}: {p}" for p in breaking_changes(old, new_defs[name])]
    return problems


def _shape(schema: Mapping[str, Any]) -> str:
    """The part of a property schema that decides what values it takes (not titles or descriptions)."""
    keys = ("type", "anyOf", "oneOf", "$ref", "items", "enum", "const", "additionalProperties")
    return json.dumps({k: schema[k] for k in keys if k in schema}, sort_keys=True, default=str)


def check_contracts(
    manifests: Iterable[Manifest],
    kernel_versions: Mapping[str, str],
    kernel_schemas: Mapping[str, Mapping[str, Any]],
    published: Path,
) -> dict[str, list[str]]:
    """Problems per module (empty lists when every contract holds); "kernel" lists breaking schema changes."""
    from edge.sdk.versions import ADAPTORS  # the registry modules added to when imported

    manifests = list(manifests)
    problems: dict[str, list[str]] = {"kernel": []}
    for event_type, schema in kernel_schemas.items():
        export = published / f"{event_type}.schema.json"
        if not export.exists():
            problems["kernel"].append(f"{event_type}: no published schema {export}")
            continue
        for change in breaking_changes(json.loads(export.read_text()), schema):
            problems["kernel"].append(
                f"{event_type} {kernel_versions[event_type]}: breaking change: {change}"
            )
    producers: dict[str, tuple[str, str]] = {}  # type -> (version, module)
    for manifest in manifests:
        found = problems.setdefault(manifest.name, [])
        for produced in manifest.produces:
            kernel_version = kernel_versions.get(produced.type)
            if kernel_version is None:
                producers[produced.type] = (produced.version, manifest.name)
            elif produced.version != kernel_version:  # a kernel type modules share (alerts, command results)
                found.append(
                    f"produces {produced.type} {produced.version}; the kernel defines {kernel_version}"
                )
            if produced.schema is None:
                found.append(f"produces {produced.type} without a schema")
                continue
            try:
                mine = load_schema(produced.schema).model_json_schema()
            except (ImportError, ValueError) as exc:
                found.append(f"produces {produced.type}: {exc}")
                continue
            if kernel_version is not None and produced.type in kernel_schemas:
                drift = breaking_changes(kernel_schemas[produced.type], mine)
                found += [f"produces {produced.type} unlike the kernel's schema: {d}" for d in drift]
    for manifest in manifests:
        for consumed in manifest.consumes:
            if consumed.type in kernel_versions:
                version, source = kernel_versions[consumed.type], "the kernel"
                if problems["kernel"] and any(p.startswith(consumed.type) for p in problems["kernel"]):
                    problems[manifest.name].append(f"consumes {consumed.type}, whose schema broke")
            elif consumed.type in producers:
                version, source = producers[consumed.type][0], f"module {producers[consumed.type][1]}"
            else:
                problems[manifest.name].append(f"consumes {consumed.type}, which nothing produces")
                continue
            if ADAPTORS.path(consumed.type, version, SpecifierSet(consumed.versions)) is None:
                problems[manifest.name].append(
                    f"consumes {consumed.type} {consumed.versions}, but {source} emits {version} "
                    "and no adaptor reaches that range"
                )
    return problems
