"""Runs scenarios against the real gateway process and measures it.

One measurement (`measure`) is: a clean bench broker, the load's simulators (own processes), the bench
subscriber (own process), the gateway (`python -m edge.cli run`, bus in external mode on the bench broker);
wait until every device is up, warm up, then a measured window sampling the gateway's CPU time and RSS every
0.5 s; optionally a broker outage and its backlog drain; then SIGTERM to the gateway (it must exit 0 within
10 s), the subscriber's records (split by protocol), the cloud simulator's arrivals (sample -> cloud, when the
load syncs to the cloud), and the outbox read back to check that nothing acknowledged was lost.
A scenario with peers (`compare`) runs each peer (`bench.peer_common.PEERS`) on the same simulators and
broker after ours. Only the gateway's own CPU (user + system of its PID, no children) is charged to it; the simulators', the
broker's and the subscriber's are reported beside it so a bottleneck outside the gateway shows.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.analysis import aggregate, by_origin, check_loss, cloud_delivery, drain, keeps_up, window
from bench.bus_backends import GATEWAY_USER, BenchNats, bus_lines
from bench.fleet import Fleet, requests_per_poll, write_gateway_config
from bench.peer_common import PEERS
from bench.postgres import PostgresServer
from bench.procs import BenchBroker, Children, ProcessCpu
from bench.runners import GatewayProcess, SubscriberProcess, read_outbox, read_pg_outbox
from bench.scenarios import DeviceGroup, Load, Scenario, pending_reason

__all__ = ["BenchEnv", "measure", "run_scenario"]

SAMPLE_EVERY = 0.5
Say = Callable[[str], None]


@dataclass
class BenchEnv:
    out: Path
    children: Children
    broker: BenchBroker
    repeat: int = 1
    say: Say = print
    postgres: PostgresServer | None = None  # started at the first load that keeps its outbox in PostgreSQL

    def postgres_server(self) -> PostgresServer:
        if self.postgres is None:
            self.postgres = PostgresServer(self.out / "postgres")
            self.postgres.start()
        return self.postgres


def whole_polls(duration: float, load: Load) -> float:
    """The window rounded up to whole poll intervals of every group: the gateway polls its devices together, so a
    window of 10.2 intervals would count 10 or 11 bursts depending on where it starts (a ±10 % error)."""
    intervals = [g.poll_interval for g in load.runnable] or [1.0]
    longest = max(intervals)
    if any(abs(longest / i - round(longest / i)) > 1e-6 for i in intervals):
        return duration  # no common period: keep the window as asked
    return math.ceil(duration / longest - 1e-9) * longest


def _machine_busy() -> tuple[float, float]:
    t = psutil.cpu_times()
    return float(t.user + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0)), time.time()


def measure(
    sc: Scenario, load: Load, env: BenchEnv, run_dir: Path, fleet: Fleet | None = None
) -> dict[str, Any]:
    """One run of one load; returns every figure (see docs/performance.md for their meaning)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if load.bus == "nats" and sc.outage > 0:
        raise ValueError(f"{sc.name} / {load.label}: the broker outage is measured on Mosquitto only")
    env.broker.reset()
    own_fleet = fleet is None
    fleet = fleet or Fleet(load, run_dir / "sims", env.children).start()
    nats = BenchNats(run_dir / "nats", env.children, load.tenants) if load.bus == "nats" else None
    if (
        nats is not None
    ):  # the subscriber reads nats-server's MQTT listener as a user of the gateway's account
        nats.start()
        sub = SubscriberProcess(
            run_dir, nats.mqtt_port, env.children, nats_user=(GATEWAY_USER.name, GATEWAY_USER.password)
        )
    else:
        sub = SubscriberProcess(run_dir, env.broker.port, env.children)
    database = f"bench_{int(time.time() * 1000)}" if load.storage == "postgresql" else None
    pg = (
        (env.postgres_server().create_database(database), env.postgres_server().password)
        if database
        else None
    )
    bus = bus_lines("nats", nats.port) if nats is not None else ()
    config = write_gateway_config(
        run_dir / "edge.toml", fleet, broker_port=env.broker.port, bus=bus, postgresql=pg
    )
    gw = GatewayProcess(config, env.children)
    try:
        sub.start()
        gw.start()
        gw.wait_ready(load.devices)
        time.sleep(sc.warmup)
        sims = [ProcessCpu([pid]) for pid in fleet.pids]
        bus_pid = nats.proc.pid if nats is not None else env.broker.pid or 0
        others = {"broker": ProcessCpu([bus_pid]), "subscriber": ProcessCpu([sub.pid])}
        if pg is not None:  # the database's processes, connections of this run included
            others["database"] = ProcessCpu(env.postgres_server().pids())
        s0, c0, m0 = gw.status() or {}, gw.cpu_seconds(), _machine_busy()
        sim0 = [s.seconds() for s in sims]
        oth0 = {k: v.seconds() for k, v in others.items()}
        t0 = time.time()
        timeline = _sample_window(gw, t0, whole_polls(sc.duration, load), c0)
        t1 = time.time()
        c1, m1, s1 = gw.cpu_seconds(), _machine_busy(), gw.status() or {}
        sim_pct = [(s.seconds() - a) / (t1 - t0) * 100 for s, a in zip(sims, sim0, strict=True)]
        oth_pct = {k: (v.seconds() - oth0[k]) / (t1 - t0) * 100 for k, v in others.items()}
        peak_window = gw.peak_rss_mb()
        outage = _outage(sc.outage, env.broker, gw) if sc.outage > 0 else None
        drained_after = gw.wait_backlog_drained(timeout=max(10.0, sc.duration))
        peak_run = gw.peak_rss_mb()
        exit_code = gw.stop()
        sub.wait_quiet()
        received = sub.stop()
        arrivals = _cloud_arrivals(fleet.cloud_port) if fleet.cloud_port else None
    finally:
        gw.stop()
        if sub.proc is not None:
            env.children.stop(sub.proc)
        if own_fleet:
            fleet.stop()
        if nats is not None:
            nats.stop()
    stats = window(received, t0, t1)
    origins = by_origin(received, t0, t1)
    if pg is not None and database is not None:
        loss = check_loss(received, read_pg_outbox(*pg))
        env.postgres_server().drop_database(database)  # checked; the next run starts empty, as SQLite's does
    else:
        loss = check_loss(received, read_outbox(gw.data_dir / "outbox.db"))
    for stale in gw.data_dir.glob("outbox.db*"):  # checked; at 50k points/s a run leaves ~100 MB of outbox
        stale.unlink()
    span = t1 - t0
    cpu = c1 - c0
    result: dict[str, Any] = {
        "scenario": sc.name,
        "load": load.label,
        "devices": load.devices,
        "groups": _groups(load),
        "offered_points_per_s": load.offered_points_per_s,
        "requests_per_device_poll": requests_per_poll(config),
        **stats,
        "by_protocol": {name: _origin_figures(name, load, o) for name, o in origins.items()},
        "cloud": cloud_delivery(received, arrivals, t0, t1) if arrivals is not None else None,
        "points_read_per_s": _rate(s0, s1, "points_read"),
        "point_updates_per_s": _rate(s0, s1, "point_updates_published"),
        "gateway_cpu_s": cpu,
        "gateway_cpu_pct": cpu / span * 100,
        "cpu_us_per_point": cpu / stats["points"] * 1e6 if stats["points"] else None,
        "peak_rss_mb": peak_run,
        "peak_rss_mb_window": peak_window,
        "rss_mb_end_of_window": timeline[-1]["rss_mb"] if timeline else None,
        "sim_processes": len(sims),
        "sim_cpu_pct": sum(sim_pct),
        "sim_cpu_pct_max_process": max(sim_pct, default=0.0),
        "broker_cpu_pct": oth_pct["broker"],
        "subscriber_cpu_pct": oth_pct["subscriber"],
        "storage": load.storage,
        "bus": load.bus,
        # the bus server's CPU (Mosquitto or nats-server) per delivered point, like the database's below
        "broker_cpu_us_per_point": oth_pct["broker"] / 100 * span / stats["points"] * 1e6
        if stats["points"]
        else None,
        "database_cpu_pct": oth_pct.get("database"),  # PostgreSQL's processes (None on SQLite: in-process)
        "database_cpu_us_per_point": oth_pct["database"] / 100 * span / stats["points"] * 1e6
        if "database" in oth_pct and stats["points"]
        else None,
        "machine_cpu_pct": (m1[0] - m0[0]) / (m1[1] - m0[1]) * 100,
        # everything else on the machine (other jobs, the harness): how noisy the run was
        "other_cpu_pct": (m1[0] - m0[0]) / (m1[1] - m0[1]) * 100
        - cpu / span * 100
        - sum(sim_pct)
        - sum(oth_pct.values()),
        "machine_cores": psutil.cpu_count(),
        "backlog_drained_after_s": drained_after,
        "loss": loss,
        "outage": None,
        "exit_code": exit_code,
        "timeline": timeline,
    }
    if outage is not None:
        result["outage"] = {
            **outage,
            **drain(received, outage["down_at"], outage["back_at"]),
        }
    ok, reasons = keeps_up(result)
    result["keeps_up"], result["verdict"] = ok, reasons
    return result


def _cloud_arrivals(port: int) -> dict[str, float]:
    """Every event the cloud simulator stored, all tenants: event id -> when it was first stored."""
    answer = httpx.get(f"http://127.0.0.1:{port}/_sim/arrivals", timeout=30.0)
    answer.raise_for_status()
    merged: dict[str, float] = {}
    for per_tenant in answer.json().values():
        merged.update(per_tenant)
    return merged


def _origin_figures(origin: str, load: Load, stats: dict[str, Any]) -> dict[str, Any]:
    """One protocol's share of the window; `offered` only for polled groups (change-driven ones offer none)."""
    groups = [g for g in load.runnable if g.protocol == origin]
    keep = ("points", "events", "delivered_points_per_s", "events_per_s", "p50_latency_ms", "p99_latency_ms")
    return {
        "devices": sum(g.count for g in groups),
        "offered_points_per_s": sum(g.offered_points_per_s for g in groups) or None,
        **{k: stats[k] for k in keep},
    }


def _sample_window(gw: GatewayProcess, t0: float, duration: float, c0: float) -> list[dict[str, Any]]:
    timeline = []
    end = t0 + duration
    for _ in range(int(duration / SAMPLE_EVERY) + 2):  # bounded in count as well as time
        now = time.time()
        if now >= end:
            break
        time.sleep(min(SAMPLE_EVERY, end - now))
        status = gw.status() or {}
        timeline.append(
            {
                "t": round(time.time() - t0, 3),
                "rss_mb": gw.rss_mb(),
                "cpu_s": round(gw.cpu_seconds() - c0, 4),
                "backlog": status.get("backlog"),
                "points_read": status.get("points_read"),
            }
        )
    return timeline


def _outage(seconds: float, broker: BenchBroker, gw: GatewayProcess) -> dict[str, Any]:
    """Broker down for `seconds` while the gateway keeps polling and storing; then back on the same port."""
    down_at = time.time()
    broker.stop()
    max_backlog = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status = gw.status() or {}
        max_backlog = max(max_backlog, int(status.get("backlog") or 0))
        time.sleep(0.25)
    broker.start()
    back_at = time.time()
    drained = gw.wait_backlog_drained(timeout=60.0)
    return {
        "down_at": down_at,
        "back_at": back_at,
        "max_backlog_events": max_backlog,
        "gateway_backlog_zero_after_s": drained,  # status.json is written once a second: ±1 s
    }


def _rate(s0: dict[str, Any], s1: dict[str, Any], key: str) -> float | None:
    if key not in s0 or key not in s1 or s1["time"] <= s0["time"]:
        return None
    return float((s1[key] - s0[key]) / (s1["time"] - s0["time"]))


def _groups(load: Load) -> list[dict[str, Any]]:
    return [
        {
            "name": g.name,
            "protocol": g.protocol,
            "devices": g.count,
            "points": g.points,
            "poll_interval": g.poll_interval,
            "status": pending_reason(g) or "measured",
        }
        for g in load.groups
    ]


def _measure_repeated(
    sc: Scenario, load: Load, env: BenchEnv, base: Path, fleet: Fleet | None = None
) -> dict[str, Any]:
    runs = []
    for k in range(env.repeat):
        env.say(
            f"  {sc.name} / {load.label}: run {k + 1}/{env.repeat} ({load.offered_points_per_s:,.0f} points/s offered)"
        )
        run = measure(sc, load, env, base / f"run-{k + 1}", fleet)
        env.say("    " + _one_line(run))
        runs.append(run)
    agg = aggregate(runs)
    ok, reasons = keeps_up(agg)
    agg["keeps_up"], agg["verdict"] = ok, reasons
    agg["runs"] = [{k: v for k, v in r.items() if k != "timeline"} for r in runs]
    return agg


def _measure_interleaved(sc: Scenario, env: BenchEnv) -> list[dict[str, Any]]:
    """Loads on the same device groups share one simulator fleet and take turns: run k of every load, then
    run k + 1, so a busy minute of the shared machine weighs on each of them, not on one."""
    by_groups: dict[tuple[DeviceGroup, ...], list[Load]] = {}
    for load in sc.loads:
        by_groups.setdefault(load.groups, []).append(load)
    results: dict[str, dict[str, Any]] = {}
    for loads in by_groups.values():
        fleet = Fleet(loads[0], env.out / sc.name / f"sims-{loads[0].label}", env.children).start()
        runs: dict[str, list[dict[str, Any]]] = {load.label: [] for load in loads}
        try:
            for k in range(env.repeat):
                for load in loads:
                    env.say(
                        f"  {sc.name} / {load.label}: run {k + 1}/{env.repeat} "
                        f"({load.offered_points_per_s:,.0f} points/s offered)"
                    )
                    run = measure(sc, load, env, env.out / sc.name / load.label / f"run-{k + 1}", fleet)
                    env.say("    " + _one_line(run))
                    runs[load.label].append(run)
        finally:
            fleet.stop()
        for label, done in runs.items():
            agg = aggregate(done)
            agg["keeps_up"], agg["verdict"] = keeps_up(agg)
            agg["runs"] = [{k: v for k, v in r.items() if k != "timeline"} for r in done]
            results[label] = agg
    return [results[load.label] for load in sc.loads]


def _one_line(r: dict[str, Any]) -> str:
    p99 = r["p99_latency_ms"]
    cpu = r["cpu_us_per_point"]
    return (
        f"delivered {r['delivered_points_per_s']:,.0f} points/s, p99 {p99 if p99 is None else round(p99, 1)} ms, "
        f"CPU {cpu if cpu is None else round(cpu, 2)} µs/point, peak RSS {r['peak_rss_mb']:.0f} MB, "
        f"loss {'none' if r['loss']['zero_loss'] else 'YES'}"
    )


def run_scenario(sc: Scenario, env: BenchEnv) -> dict[str, Any]:
    env.say(f"[{sc.name}] {sc.description}")
    out: dict[str, Any] = {
        "scenario": sc.name,
        "description": sc.description,
        "warmup_s": sc.warmup,
        "duration_s": sc.duration,
        "outage_s": sc.outage,
        "repeat": env.repeat,
        "notes": list(sc.notes),
        "pending": {},
        "loads": [],
    }
    if sc.peers and not sc.peer:
        out["notes"].append(f"peers not run (--no-peer): {', '.join(PEERS[p].label for p in sc.peers)}")
    for load in sc.loads:
        out["pending"].update(load.pending)
    for name, reason in out["pending"].items():
        env.say(f"  {name}: {reason}")
    if sc.interleave:
        out["loads"] = _measure_interleaved(sc, env)
        return out
    for i, load in enumerate(sc.loads):
        base = env.out / sc.name / load.label.replace("@", "_")
        # a scenario with peers always has the comparison's shape, peers run or not (--no-peer)
        entry = _compare_load(sc, load, env, base) if sc.peers else _measure_repeated(sc, load, env, base)
        out["loads"].append(entry)
        result = entry["ours"] if sc.peers else entry
        if sc.ramp and not result["keeps_up"]:
            env.say(f"  stops keeping up at {load.label}: {'; '.join(result['verdict'])}")
            out["stopped_at"] = {"load": load.label, "reasons": result["verdict"]}
            out["not_run"] = [ld.label for ld in sc.loads[i + 1 :]]
            break
    if sc.ramp:
        sustained = [r for r in out["loads"] if r["keeps_up"]]
        out["highest_sustained"] = (
            max(sustained, key=lambda r: r["offered_points_per_s"])["load"] if sustained else None
        )
    return out


def _compare_load(sc: Scenario, load: Load, env: BenchEnv, base: Path) -> dict[str, Any]:
    """This gateway and each peer on the same simulators and broker, one after the other."""
    fleet = Fleet(load, base / "sims", env.children).start()
    try:
        ours = _measure_repeated(sc, load, env, base / "ours", fleet)
        peers = [_peer(sc, load, env, fleet, name, base / name, ours) for name in sc.peers if sc.peer]
    finally:
        fleet.stop()
    return {
        "load": load.label,
        "offered_points_per_s": load.offered_points_per_s,
        "ours": ours,
        "peers": peers,
        "keeps_up": ours["keeps_up"],
    }


def _peer(
    sc: Scenario, load: Load, env: BenchEnv, fleet: Fleet, name: str, workdir: Path, ours: dict[str, Any]
) -> dict[str, Any]:
    spec = PEERS[name]
    group = load.runnable[0]
    head = {"peer": name, "label": spec.label}
    runs = []
    for k in range(env.repeat):
        env.say(f"  {sc.name} / {load.label}: {spec.label} run {k + 1}/{env.repeat}")
        env.broker.reset()
        try:
            res = spec.run(
                workdir=workdir / f"run-{k + 1}",
                broker_port=env.broker.port,
                devices=fleet.modbus_endpoints(),
                registers=group.points,
                poll_interval=group.poll_interval,
                duration=sc.duration,
                warmup=sc.warmup,
            )
        except Exception as exc:  # a broken peer must not lose our own figures
            env.say(f"    {spec.label} run failed: {exc!r}")
            return {**head, "error": repr(exc)}
        run = asdict(res)
        env.say(
            f"    {spec.label}: delivered {run['delivered_points_per_s']:,.0f} points/s, "
            f"CPU {run['cpu_us_per_point']:.1f} µs/point, p99 {run['p99_latency_ms'] or 0:.1f} ms, "
            f"peak RSS {run['peak_rss_mb']:.0f} MB"
        )
        runs.append(run)
    agg = aggregate(runs)
    return {**head, "result": agg, "ratios": _ratios(ours, agg)}


def _ratios(ours: dict[str, Any], peer: dict[str, Any]) -> dict[str, float | None]:
    def div(a: Any, b: Any) -> float | None:
        return float(a) / float(b) if a is not None and b not in (None, 0) else None

    return {
        "delivered_points_per_s_ours_over_peer": div(
            ours["delivered_points_per_s"], peer["delivered_points_per_s"]
        ),
        "cpu_per_point_peer_over_ours": div(peer["cpu_us_per_point"], ours["cpu_us_per_point"]),
        "peak_rss_peer_over_ours": div(peer["peak_rss_mb"], ours["peak_rss_mb"]),
    }
