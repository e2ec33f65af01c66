"""The three outputs of `edge bench`: a table for people, results.json for machines, bench.png for both."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import psutil

from bench.procs import mosquitto_version

__all__ = ["TARGETS", "machine_info", "plot", "table", "targets", "write_json"]

# The targets on the 2-core reference machine.
TARGETS = {
    "sustained_points_per_s": 50_000,
    "cpu_us_per_point": 8.5,
    "building_p99_ms": 50.0,
    "building_peak_rss_mb": 150.0,
}


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _git_commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    commit = out.stdout.strip() or "unknown"
    return commit + ("-dirty" if dirty.stdout.strip() else "")


def machine_info() -> dict[str, Any]:
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cores": psutil.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "memory_gb": round(psutil.virtual_memory().total / 1e9, 1),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "pymodbus": _version("pymodbus"),
        "paho-mqtt": _version("paho-mqtt"),
        "orjson": _version("orjson"),
        "aiosqlite": _version("aiosqlite"),
        "mosquitto": mosquitto_version(),
        "edge-gateway": _version("edge-gateway"),
        "git_commit": _git_commit(),
        "load_average": os.getloadavg(),
    }


def write_json(path: Path, results: dict[str, Any]) -> None:
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))


# --------------------------------------------------------------------------------------------- table


def _f(value: Any, digits: int = 0, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float | int):
        return f"{value:,.{digits}f}{suffix}"
    return str(value)


_HEADER = (
    ("run", 22),
    ("dev", 5),
    ("offered/s", 10),
    ("delivered/s", 11),
    ("p50 ms", 7),
    ("p99 ms", 7),
    ("CPU µs/pt", 9),
    ("gw CPU%", 7),
    ("peak MB", 7),
    ("sims CPU%", 9),
    ("other CPU%", 10),
    ("loss", 5),
    ("ok", 3),
)


def _row(name: str, r: dict[str, Any]) -> str:
    loss = r.get("loss") or {}
    lost = (loss.get("sequence_gaps") or 0) + (loss.get("lost_events") or 0) + (loss.get("missing_head") or 0)
    cells = (
        name,
        _f(r.get("devices")),
        _f(r.get("offered_points_per_s")),
        _f(r.get("delivered_points_per_s")),
        _f(r.get("p50_latency_ms"), 1),
        _f(r.get("p99_latency_ms"), 1),
        _f(r.get("cpu_us_per_point"), 2),
        _f(r.get("gateway_cpu_pct")),
        _f(r.get("peak_rss_mb")),
        _f(r.get("sim_cpu_pct")),
        _f(r.get("other_cpu_pct")),
        str(lost) if loss else "-",
        "-" if r.get("keeps_up") is None else "yes" if r["keeps_up"] else "NO",
    )
    return "  ".join(
        c.rjust(w) if i else c.ljust(w) for i, (c, (_, w)) in enumerate(zip(cells, _HEADER, strict=True))
    )


def table(results: dict[str, Any]) -> str:
    """Every measured load as one row, then pending parts, the outage, the peer ratios and the targets."""
    head = "  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(_HEADER))
    lines = [head, "-" * len(head)]
    extra: list[str] = []
    for sc in results["scenarios"]:
        for entry in sc["loads"]:
            if "ours" in entry:  # a comparison (its peers may not have run: --no-peer)
                lines.append(_row(f"{sc['scenario']} {entry['load']}", entry["ours"]))
                for peer in entry["peers"]:
                    if "error" in peer:
                        extra.append(f"{sc['scenario']} {entry['load']}: {peer['label']}: {peer['error']}")
                        continue
                    p = peer["result"]
                    lines.append(
                        _row(
                            f"  {peer['label']}",
                            {**p, "devices": entry["ours"]["devices"], "keeps_up": None},
                        )
                    )
                    ra = peer["ratios"]
                    extra.append(
                        f"{sc['scenario']} {entry['load']} vs {peer['label']}: delivered x"
                        f"{_f(ra['delivered_points_per_s_ours_over_peer'], 2)}, {peer['label']} needs x"
                        f"{_f(ra['cpu_per_point_peer_over_ours'], 1)} the CPU per point and x"
                        f"{_f(ra['peak_rss_peer_over_ours'], 1)} the memory"
                    )
            else:
                lines.append(
                    _row(
                        f"{sc['scenario']} {entry['load']}"
                        if sc["scenario"] != entry["load"]
                        else entry["load"],
                        entry,
                    )
                )
            out = entry.get("outage") if isinstance(entry, dict) else None
            if out and out.get("resumed"):
                extra.append(
                    f"{sc['scenario']}: broker down {out['outage_s']:.1f} s, max backlog {out['max_backlog_events']} events; "
                    f"delivery resumed {out['reconnect_s']:.2f} s after the broker was back, "
                    f"{out['backlog_events']} backlogged events ({out['backlog_points']} points) drained in "
                    f"{out['drain_s'] * 1000:.0f} ms = {_f(out['drain_events_per_s'])} events/s, "
                    f"{_f(out['drain_points_per_s'])} points/s"
                )
        for name, reason in sc.get("pending", {}).items():
            extra.append(f"{sc['scenario']}: {name}: {reason}")
        extra += [f"{sc['scenario']}: {n}" for n in sc.get("notes", [])]
        if sc.get("ramp_summary"):
            extra.append(f"{sc['scenario']}: {sc['ramp_summary']}")
    lines += ["", *extra, "", *targets(results)["lines"]]
    return "\n".join(lines)


def targets(results: dict[str, Any]) -> dict[str, Any]:
    """The issue's four targets against this run's figures (None where the scenario was not run)."""
    by_name = {sc["scenario"]: sc for sc in results["scenarios"]}
    checks: dict[str, Any] = {}
    lines = ["targets (2-core):"]
    stress = by_name.get("stress")
    if stress is not None:
        best = next((r for r in stress["loads"] if r["load"] == stress.get("highest_sustained")), None)
        rate = best["delivered_points_per_s"] if best else 0.0
        cpu = best["cpu_us_per_point"] if best else None
        checks["sustained_points_per_s"] = {
            "value": rate,
            "target": TARGETS["sustained_points_per_s"],
            "met": rate >= TARGETS["sustained_points_per_s"],
        }
        checks["cpu_us_per_point"] = {
            "value": cpu,
            "target": TARGETS["cpu_us_per_point"],
            "met": cpu is not None and cpu <= TARGETS["cpu_us_per_point"],
            "at": best["load"] if best else None,
        }
        lines.append(
            f"  sustained end to end, no loss: {_f(rate)} points/s (target >= 50,000): {_met(checks['sustained_points_per_s'])}"
        )
        lines.append(
            f"  CPU per delivered point at that load: {_f(cpu, 2)} µs (target <= 8.5): {_met(checks['cpu_us_per_point'])}"
        )
    building = by_name.get("building")
    if building is not None and building["loads"]:
        b = building["loads"][0]
        p99, rss = b["p99_latency_ms"], b["peak_rss_mb"]
        checks["building_p99_ms"] = {
            "value": p99,
            "target": TARGETS["building_p99_ms"],
            "met": p99 is not None and p99 < TARGETS["building_p99_ms"],
        }
        checks["building_peak_rss_mb"] = {
            "value": rss,
            "target": TARGETS["building_peak_rss_mb"],
            "met": rss is not None and rss < TARGETS["building_peak_rss_mb"],
        }
        lines.append(
            f"  building p99 sample->MQTT: {_f(p99, 1)} ms (target < 50): {_met(checks['building_p99_ms'])}"
        )
        lines.append(
            f"  building peak RSS: {_f(rss)} MB (target < 150): {_met(checks['building_peak_rss_mb'])}"
        )
        lines.append(
            f"  building CPU per delivered point: {_f(b['cpu_us_per_point'], 2)} µs (at {_f(b['delivered_points_per_s'])} points/s)"
        )
    return {"checks": checks, "lines": lines}


def _met(check: dict[str, Any]) -> str:
    return "met" if check["met"] else "NOT met"


# ---------------------------------------------------------------------------------------------- plot


def plot(results: dict[str, Any], path: Path) -> Path | None:
    """Delivered vs offered points/s and p50/p99 latency vs offered load; None if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    series: dict[str, list[tuple[float, dict[str, Any]]]] = {}
    for sc in results["scenarios"]:
        for entry in sc["loads"]:
            if "ours" in entry:
                series.setdefault(f"edge-gateway ({sc['scenario']} 20x50)", []).append(
                    (entry["offered_points_per_s"], entry["ours"])
                )
                for peer in entry["peers"]:
                    if "result" in peer:
                        name = f"{peer['label']} (20x50)"
                        series.setdefault(name, []).append((entry["offered_points_per_s"], peer["result"]))
            else:
                label = (
                    "edge-gateway (stress ramp 100x50)"
                    if sc["scenario"] == "stress"
                    else f"edge-gateway ({sc['scenario']})"
                )
                series.setdefault(label, []).append((entry["offered_points_per_s"], entry))
    if not series:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 6.8))
    top = max(x for pts in series.values() for x, _ in pts)
    ax1.plot([0, top], [0, top], color="0.8", linestyle="--", label="delivered = offered")
    markers = iter("osD^v<>")
    for name, pts in series.items():
        pts.sort(key=lambda p: p[0])
        xs = [x for x, _ in pts]
        marker = next(markers, "o")
        ax1.plot(xs, [r.get("delivered_points_per_s") or 0 for _, r in pts], marker=marker, label=name)
        p50 = [(x, r.get("p50_latency_ms")) for x, r in pts if r.get("p50_latency_ms")]
        p99 = [(x, r.get("p99_latency_ms")) for x, r in pts if r.get("p99_latency_ms")]
        if p99:
            line = ax2.plot([x for x, _ in p99], [y for _, y in p99], marker=marker, label=f"{name} p99")
            ax2.plot(
                [x for x, _ in p50],
                [y for _, y in p50],
                marker=marker,
                linestyle=":",
                color=line[0].get_color(),
                label=f"{name} p50",
            )
    ax1.axhline(
        TARGETS["sustained_points_per_s"],
        color="tab:red",
        linewidth=0.8,
        linestyle="-.",
        label="target 50k points/s",
    )
    ax1.set(
        xlabel="offered load (points/s)", ylabel="delivered to MQTT subscriber (points/s)", title="Throughput"
    )
    ax2.set_yscale("log")
    ax2.axhline(1000, color="0.6", linewidth=0.8, linestyle="--", label="1 s (ramp limit)")
    ax2.axhline(50, color="tab:red", linewidth=0.8, linestyle="-.", label="50 ms (building target)")
    ax2.set(xlabel="offered load (points/s)", ylabel="sample -> MQTT receipt latency (ms)", title="Latency")
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    info = results.get("machine", {})
    fig.suptitle(
        f"edge bench, {info.get('cores')} cores, Python {info.get('python')}, commit {info.get('git_commit')} "
        f"(medians of {results.get('repeat', 1)})",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------ markdown


def markdown(results: dict[str, Any]) -> str:
    """The figures as Markdown tables, for docs/performance.md (`python -m bench.report results.json`)."""
    head = (
        "| run | devices | offered points/s | delivered points/s | p50 ms | p99 ms | CPU µs/point | gateway CPU % "
        "| peak RSS MB | simulators CPU % | other CPU % | lost |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    rows = [head]

    def row(name: str, r: dict[str, Any], devices: Any) -> str:
        loss = r.get("loss") or {}
        lost = (loss.get("sequence_gaps") or 0) + (loss.get("lost_events") or 0) if loss else "-"
        return (
            f"| {name} | {_f(devices)} | {_f(r.get('offered_points_per_s'))} | {_f(r.get('delivered_points_per_s'))} "
            f"| {_f(r.get('p50_latency_ms'), 1)} | {_f(r.get('p99_latency_ms'), 1)} | {_f(r.get('cpu_us_per_point'), 2)} "
            f"| {_f(r.get('gateway_cpu_pct'))} | {_f(r.get('peak_rss_mb'))} | {_f(r.get('sim_cpu_pct'))} "
            f"| {_f(r.get('other_cpu_pct'))} | {lost} |"
        )

    for sc in results["scenarios"]:
        for entry in sc["loads"]:
            if "ours" in entry:
                rows.append(
                    row(f"compare {entry['load']}: edge-gateway", entry["ours"], entry["ours"]["devices"])
                )
                for peer in entry["peers"]:
                    if "result" in peer:
                        rows.append(
                            row(
                                f"compare {entry['load']}: {peer['label']}",
                                peer["result"],
                                entry["ours"]["devices"],
                            )
                        )
            else:
                ok = "" if entry.get("keeps_up") else " (does not keep up)"
                name = (
                    entry["load"] if entry["load"] == sc["scenario"] else f"{sc['scenario']} {entry['load']}"
                )
                rows.append(row(f"{name}{ok}", entry, entry["devices"]))
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown(orjson.loads(Path(sys.argv[1]).read_bytes())))
