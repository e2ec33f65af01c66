"""Commissioning from the console: run a driver's discovery, follow its progress, review the proposed point
map, rename points, and add the device (operator, in the caller's tenant).

The same code as `edge device discover` and `edge device add` (edge.devices.commissioning): the proposal is
written as a profile file beside the configuration (`profiles/<device>.toml`), the device is appended to the
configuration file (comments kept, the whole file validated first), and the running gateway re-reads the file
and starts polling the new device, whose values then arrive on the live stream like any other's.
Discoveries run as tasks of the API; the last few are kept in memory for their caller's tenant.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from edge.api.deps import ApiState, Caller, Operator, State, Viewer
from edge.api.problems import PROBLEM_RESPONSES, Problem
from edge.config.loader import load_config
from edge.devices.commissioning import CommissioningError, add_device, discover, renamed_points, write_profile
from edge.sdk.drivers import DiscoveredDevice
from edge.sdk.errors import ConfigError, DeviceError

router = APIRouter(prefix="/v1", tags=["commissioning"], responses=PROBLEM_RESPONSES)
_KEPT = 20  # discoveries remembered (all tenants); the oldest finished ones go first
_PROGRESS_LINES = 200
PROFILES_FOLDER = "profiles"  # beside the configuration file


@dataclass
class DiscoveryJob:
    id: str
    tenant: str
    driver: str
    state: Literal["running", "done", "failed"] = "running"
    progress: list[str] = field(default_factory=list)
    devices: list[DiscoveredDevice] = field(default_factory=list)
    error: str | None = None
    task: asyncio.Task[None] | None = None

    def note(self, line: str) -> None:
        self.progress = [*self.progress[-(_PROGRESS_LINES - 1) :], line]

    async def run(self, state: ApiState, targets: dict[str, Any]) -> None:
        try:
            self.devices = await discover(state.services.registry, self.driver, targets, self.note)
            self.state = "done"
            self.note(f"found {len(self.devices)} device(s)")
        except (CommissioningError, ValueError, DeviceError) as exc:
            self.state, self.error = "failed", str(exc)


class DiscoveryRequest(BaseModel):
    driver: str = Field(min_length=1, max_length=64, description="Driver to search with, e.g. modbus.")
    targets: dict[str, str | int | float] = Field(
        default_factory=dict,
        max_length=32,
        description="Driver-specific targets (`edge device discover -t`).",
    )


class ProposedDevice(BaseModel):
    index: int
    address: str
    identity: dict[str, str]
    connection: dict[str, Any]
    profile: str
    points: list[dict[str, Any]]


class Discovery(BaseModel):
    id: str
    driver: str
    state: str
    progress: list[str]
    error: str | None
    devices: list[ProposedDevice]


class NewDevice(BaseModel):
    name: str = Field(min_length=1, max_length=64, description="The new device's name.")
    site: str = Field(min_length=1, max_length=64)
    poll_interval: float = Field(default=1.0, gt=0, le=3600)
    timeout: float = Field(default=1.0, gt=0, le=60)
    names: dict[str, str] = Field(default_factory=dict, description="Proposed point name -> the name to use.")


class AddedDevice(BaseModel):
    device: str
    profile: str
    polling: bool = Field(description="Whether the running gateway polls it now.")


def _jobs(state: ApiState) -> dict[str, DiscoveryJob]:
    return state.discoveries  # type: ignore[return-value]  # typed loosely there: deps imports no route


def _job(state: ApiState, caller: Caller, job_id: str) -> DiscoveryJob:
    job = _jobs(state).get(job_id)
    if job is None or job.tenant != caller.tenant:
        raise Problem(404, f"tenant {caller.tenant!r} has no discovery {job_id!r}")
    return job


def _view(job: DiscoveryJob) -> Discovery:
    devices = [
        ProposedDevice(
            index=index, address=d.address, identity=d.identity, connection=d.connection,
            profile=d.profile_name, points=d.points,
        )
        for index, d in enumerate(job.devices)
    ]  # fmt: skip
    return Discovery(
        id=job.id, driver=job.driver, state=job.state, progress=job.progress, error=job.error, devices=devices
    )


@router.post(
    "/discoveries", summary="Start a driver's discovery (operator); follow it with GET", status_code=202
)
async def start_discovery(state: State, caller: Operator, body: DiscoveryRequest) -> Discovery:
    jobs = _jobs(state)
    if len(jobs) >= _KEPT:
        finished = [j for j in jobs.values() if j.state != "running"]
        if not finished:
            raise Problem(429, f"{_KEPT} discoveries are running: wait for one to finish")
        del jobs[finished[0].id]
    job = DiscoveryJob(str(uuid.uuid4()), caller.tenant, body.driver)
    job.note(f"searching with {body.driver}: " + ", ".join(f"{k}={v}" for k, v in body.targets.items()))
    job.task = asyncio.create_task(job.run(state, dict(body.targets)), name=f"discovery-{job.id}")
    jobs[job.id] = job
    return _view(job)


@router.get("/discoveries/{discovery}", summary="A discovery's progress and proposals")
async def get_discovery(
    state: State, caller: Viewer, discovery: Annotated[str, Path(description="Discovery id.")]
) -> Discovery:
    return _view(_job(state, caller, discovery))


@router.post(
    "/discoveries/{discovery}/devices/{index}",
    summary="Add a proposed device to the configuration file and start polling it (operator)",
    status_code=201,
)
async def add_discovered(
    state: State,
    caller: Operator,
    body: NewDevice,
    discovery: Annotated[str, Path(description="Discovery id.")],
    index: Annotated[int, Path(ge=0, description="The proposal's index.")],
) -> AddedDevice:
    job = _job(state, caller, discovery)
    if index >= len(job.devices):
        raise Problem(404, f"discovery {discovery!r} proposed {len(job.devices)} device(s), not #{index}")
    loaded = state.services.loaded
    if loaded.device(body.name) is not None:
        raise Problem(409, f"a device named {body.name!r} exists already", device=body.name)
    try:
        proposal = renamed_points(job.devices[index], body.names)
    except CommissioningError as exc:
        raise Problem(422, str(exc)) from None
    folder = loaded.path.parent / PROFILES_FOLDER
    written = None
    if proposal.points:
        if (folder / f"{body.name}.toml").exists():
            raise Problem(409, f"profile file {folder / body.name}.toml exists already", device=body.name)
        written = write_profile(folder, job.driver, proposal, body.name)
    profile = f"{PROFILES_FOLDER}/{written.name}" if written else proposal.profile_name
    try:
        await asyncio.to_thread(
            add_device, loaded.path, name=body.name, driver=job.driver, tenant=caller.tenant, site=body.site,
            profile=profile, connection=proposal.connection, poll_interval=body.poll_interval,
            timeout=body.timeout,
        )  # fmt: skip
        fresh = await asyncio.to_thread(load_config, loaded.path, state.services.registry)
    except (ConfigError, CommissioningError) as exc:
        if written is not None:
            written.unlink(missing_ok=True)
        issues = [str(i) for i in exc.issues] if isinstance(exc, ConfigError) else [str(exc)]
        raise Problem(422, "not added: the configuration would be invalid", issues=issues) from None
    started = await state.services.start_new_devices(fresh)
    return AddedDevice(device=body.name, profile=profile, polling=body.name in started)
