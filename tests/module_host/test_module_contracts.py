"""Contracts: every installed module against the kernel's event registry."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from edge.module_host.contracts import check_contracts
from edge.plugins import Consumes, Manifest, PluginRegistry, Produces
from edge.sdk.events import ASSET_FAILED, DATA_VERSIONS, TELEMETRY, json_schemas

ROOT = Path(__file__).resolve().parents[2]
PUBLISHED = ROOT / "docs" / "schemas"


def test_every_installed_module_keeps_its_contract_with_the_kernel() -> None:
    registry = PluginRegistry.from_entry_points().load_all()
    assert not {n: r for n, r in registry.failures.items() if n in registry.modules}
    manifests = [plugin.manifest for plugin in registry.modules.values()]
    assert manifests, "no module is installed"
    problems = check_contracts(manifests, DATA_VERSIONS, json_schemas(), PUBLISHED)
    assert {name: found for name, found in problems.items() if found} == {}


def test_a_breaking_schema_change_fails_the_contract_check() -> None:
    class TelemetryWithoutSite(BaseModel):  # `site` removed, `points` made a list: both break readers
        model_config = ConfigDict(extra="forbid")
        device: str
        points: list[str]

    schemas = {**json_schemas(), TELEMETRY: TelemetryWithoutSite.model_json_schema()}
    reader = Manifest("reader", "module", "1.0.0", ">=1,<2", consumes=(Consumes(TELEMETRY, ">=1.0,<2"),))
    problems = check_contracts([reader], DATA_VERSIONS, schemas, PUBLISHED)
    assert (
        f"{TELEMETRY} {DATA_VERSIONS[TELEMETRY]}: breaking change: property 'site' removed"
        in problems["kernel"]
    )
    assert any("property 'points' changed type" in p for p in problems["kernel"])
    assert problems["reader"] == [f"consumes {TELEMETRY}, whose schema broke"]


def test_a_module_that_handles_only_another_major_fails_the_contract_check() -> None:
    reader = Manifest("reader", "module", "1.0.0", ">=1,<2", consumes=(Consumes(TELEMETRY, ">=2.0,<3"),))
    problems = check_contracts([reader], DATA_VERSIONS, json_schemas(), PUBLISHED)
    assert problems["reader"] == [
        f"consumes {TELEMETRY} >=2.0,<3, but the kernel emits {DATA_VERSIONS[TELEMETRY]} and no adaptor reaches "
        "that range"
    ]


class NarrowAlert(BaseModel):
    asset: int  # the kernel's alert names the asset with a string


def test_a_shared_kernel_type_is_produced_only_in_the_kernels_version_and_shape() -> None:
    wrong_version = Manifest(
        "alerts",
        "module",
        "1.0.0",
        ">=1,<2",
        produces=(Produces(ASSET_FAILED, "2.0", "edge.sdk.events:AssetFailedData"),),
    )
    wrong_shape = Manifest(
        "shapes",
        "module",
        "1.0.0",
        ">=1,<2",
        produces=(Produces(ASSET_FAILED, "1.0", f"{__name__}:NarrowAlert"),),
    )
    problems = check_contracts([wrong_version, wrong_shape], DATA_VERSIONS, json_schemas(), PUBLISHED)
    assert problems["alerts"] == [f"produces {ASSET_FAILED} 2.0; the kernel defines 1.0"]
    assert problems["shapes"] and all("unlike the kernel's schema" in p for p in problems["shapes"])
