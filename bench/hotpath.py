"""The per-poll hot path, measured alone: 20 Modbus devices x 50 registers at one poll interval.

`edge bench compare` measures the same load beside its peers; this runs only our gateway, so a change to the
hot path can be measured quickly, interleaved with another source tree (the A/B method of
docs/performance.md), and profiled with wall-clock stacks:

    python -m bench.hotpath --interval 1 --repeat 3                       # medians of 3
    python -m bench.hotpath --interval 1 --repeat 3 --against /work/base  # base and this tree, interleaved
    python -m bench.hotpath --interval 1 --profile prof/ --how wall       # py-spy stacks of the window
    python -m bench.hotpath --set bus.point_topic_mode=device --point-default report_deadband=0
    python -m bench.hotpath --building-part +modules --profile prof/ --how cpu   # a step of the building

`--against TREE` runs the gateway (and the simulators) from another checkout by putting it first on the
children's PYTHONPATH; the harness itself stays this tree's. `--profile DIR` attaches py-spy (when
installed) to the gateway for the measured window and writes collapsed stacks (`--how wall` keeps the samples
where a thread waits, so what the gateway waits on shows as well as what it computes) and the CPU of each
thread. `--set SECTION.KEY=VALUE` adds a setting to the generated gateway configuration, `--point-default
KEY=VALUE` one to every point (the profiles' `[defaults]`), for both trees alike.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

import bench.harness
from bench.harness import BenchEnv, measure
from bench.procs import BenchBroker, Children
from bench.scenarios import DeviceGroup, Load, Scenario, building_parts

__all__ = ["hotpath_load", "main"]

FIGURES = (
    "gateway_cpu_pct",
    "cpu_us_per_point",
    "p50_latency_ms",
    "p99_latency_ms",
    "delivered_points_per_s",
    "peak_rss_mb",
)


def hotpath_load(interval: float, devices: int = 20, registers: int = 50, point_topics: bool = True) -> Load:
    group = DeviceGroup("bank", "modbus", "bank", devices, registers, interval, "dev", per_process=10)
    return Load(f"{devices}x{registers}@{interval:g}s", (group,), point_topics=point_topics)


def _toml_value(text: str) -> str:
    try:
        float(text)
    except ValueError:
        return text if text in ("true", "false") else f'"{text}"'
    return text


def _with_settings(settings: list[str], point_defaults: list[str]) -> None:
    """Make the harness write these settings into every gateway configuration and profile it generates."""
    write = bench.harness.write_gateway_config  # type: ignore[attr-defined]

    def patched(path: Path, *args: Any, **kwargs: Any) -> Path:
        written = write(path, *args, **kwargs)
        text = written.read_text()
        for setting in settings:
            key, value = setting.split("=", 1)
            section, name = key.rsplit(".", 1)
            header = next(line for line in text.splitlines() if line.startswith(f"[{section}]"))
            text = text.replace(header, f"{header}\n{name} = {_toml_value(value)}", 1)
        written.write_text(text)
        for profile in path.parent.glob("bench-*.toml"):
            lines = [f"{k} = {_toml_value(v)}" for k, v in (d.split("=", 1) for d in point_defaults)]
            profile.write_text(
                profile.read_text().replace(
                    "[defaults]\n", "[defaults]\n" + "".join(f"{line}\n" for line in lines), 1
                )
            )
        return written

    bench.harness.write_gateway_config = patched  # type: ignore[attr-defined]


def _gateway_pid(config: Path, timeout: float) -> int | None:
    """The pid of the gateway started on `config` (a child of this process), once it exists."""
    deadline = time.monotonic() + timeout
    me = psutil.Process()
    while time.monotonic() < deadline:
        for child in me.children(recursive=True):
            try:
                argv = child.cmdline()
            except psutil.Error:
                continue
            if "edge.cli" in argv and str(config) in argv:
                return int(child.pid)
        time.sleep(0.1)
    return None


def _profile(config: Path, out: Path, start_after: float, seconds: float, how: str) -> None:
    """Profile the gateway for `seconds`, `start_after` seconds after it appears; CPU per thread in any case.

    `how`: "threads" (CPU per thread only), "cpu" / "wall" (py-spy collapsed stacks, "wall" with waiting
    threads), "cprofile" (SIGRTMIN+1 / +2 to a gateway started with bench/hotpath_profile on PYTHONPATH)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    have_spy = Path(spy).exists()
    if how in ("cpu", "wall") and not have_spy:
        print("py-spy is not installed: no stacks (pip install py-spy)")
    pid = _gateway_pid(config, 60.0)
    if pid is None:
        return
    time.sleep(start_after)
    names = _thread_names(spy, pid) if have_spy else {}
    length = max(1.0, seconds - 4.0)  # inside the measured window
    before, waited, t0 = _thread_cpu(pid), _run_delay(pid), time.monotonic()
    if how == "cprofile":
        os.kill(pid, signal.SIGRTMIN + 1)
        time.sleep(length)
        os.kill(pid, signal.SIGRTMIN + 2)
    elif how in ("cpu", "wall") and have_spy:
        argv = [spy, "record", "-p", str(pid), "-d", str(int(length)), "-r", "1000", "--nonblocking"]
        argv += ["-f", "raw", "-o", str(out), "--threads"] + (["--idle"] if how == "wall" else [])
        subprocess.run(argv, check=False, capture_output=True, timeout=length + 30)
    else:
        time.sleep(length)
    after, waited_after, t1 = _thread_cpu(pid), _run_delay(pid), time.monotonic()
    lines = [
        f"{(cpu - before.get(tid, 0.0)) / (t1 - t0) * 1000:8.2f} ms/s CPU"
        f" {(waited_after.get(tid, 0.0) - waited.get(tid, 0.0)) / (t1 - t0) * 1000:8.2f} ms/s waiting for a CPU"
        f"  {names.get(tid, '?')} ({tid})"
        for tid, cpu in sorted(after.items(), key=lambda kv: before.get(kv[0], 0.0) - kv[1])
    ]
    total = sum(after.values()) - sum(before.get(t, 0.0) for t in after)
    lines.append(f"{total / (t1 - t0) * 1000:8.2f} ms/s  all threads")
    out.with_suffix(".threads").write_text(f"CPU per thread ({how})\n" + "\n".join(lines) + "\n")


def _run_delay(pid: int) -> dict[int, float]:
    """Seconds each thread of `pid` spent runnable but waiting for a CPU (Linux schedstat): a thread that is
    late although the gateway's own CPU is low is waiting for the machine, not for anything of the gateway."""
    delays = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            delays[int(task.name)] = int((task / "schedstat").read_text().split()[1]) / 1e9
        except (OSError, ValueError, IndexError):
            continue
    return delays


def _thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of `pid`."""
    try:
        return {t.id: t.user_time + t.system_time for t in psutil.Process(pid).threads()}
    except psutil.Error:
        return {}


def _thread_names(spy: str, pid: int) -> dict[int, str]:
    """Python thread names by native id, from one `py-spy dump`."""
    done = subprocess.run(
        [spy, "dump", "-p", str(pid)], check=False, capture_output=True, text=True, timeout=30
    )
    names = {}
    for match in re.finditer(r'Thread (0x[0-9A-Fa-f]+|\d+) \((\w+)\): "([^"]*)"', done.stdout):
        names[int(match.group(1), 0)] = match.group(3)
    return names


def _one(
    sc: Scenario, load: Load, env: BenchEnv, run_dir: Path, tree: str | None, profile: Path | None, how: str
) -> dict[str, Any]:
    previous = os.environ.get("PYTHONPATH")
    paths = [tree] if tree is not None else []
    if profile is not None and how == "cprofile":
        paths.append(str(Path(__file__).with_name("hotpath_profile")))
        os.environ["HOTPATH_CPROFILE"] = str(
            profile.absolute() / f"{run_dir.parent.name}-{run_dir.name}.pstats"
        )
    if paths:
        os.environ["PYTHONPATH"] = os.pathsep.join(paths + ([previous] if previous else []))
    spy: threading.Thread | None = None
    try:
        if profile is not None:
            profile.mkdir(parents=True, exist_ok=True)
            target = profile / f"{run_dir.parent.name}-{run_dir.name}.txt"
            spy = threading.Thread(
                target=_profile,
                args=(run_dir.absolute() / "edge.toml", target, sc.warmup + 3.0, sc.duration, how),
                daemon=True,
            )
            spy.start()
        return measure(sc, load, env, run_dir)
    finally:
        if spy is not None:
            spy.join(5.0)
        os.environ.pop("HOTPATH_CPROFILE", None)
        if paths:
            if previous is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = previous


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.hotpath", description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=1.0, help="poll interval in seconds")
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--registers", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--no-point-topics", action="store_true", help="[bus] point_topics = false")
    parser.add_argument(
        "--building-part",
        choices=[load.label for load in building_parts().loads],
        help="measure (and profile) this step of `edge bench building-parts` instead of the Modbus bank",
    )
    parser.add_argument("--against", help="another source tree, run interleaved with this one")
    parser.add_argument("--profile", type=Path, help="directory for py-spy collapsed stacks")
    parser.add_argument(
        "--how",
        choices=("threads", "cpu", "wall", "cprofile"),
        default="threads",
        help="with --profile: CPU per thread only, py-spy CPU or wall-clock stacks, or cProfile",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("bench-results") / time.strftime("hotpath-%Y%m%d-%H%M%S")
    )
    parser.add_argument("--set", action="append", default=[], help="SECTION.KEY=VALUE in the gateway config")
    parser.add_argument("--point-default", action="append", default=[], help="KEY=VALUE for every point")
    args = parser.parse_args(argv)
    _with_settings(args.set, args.point_default)
    load = hotpath_load(args.interval, args.devices, args.registers, not args.no_point_topics)
    if args.building_part:
        load = next(part for part in building_parts().loads if part.label == args.building_part)
    sc = Scenario("hotpath", "per-poll hot path", (load,), warmup=5.0, duration=args.duration)
    trees: dict[str, str | None] = {"this": None}
    if args.against:
        trees = {"against": str(Path(args.against).absolute()), "this": None}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    out = args.out.absolute()
    with Children() as children:
        broker = BenchBroker(out / "broker", children)
        broker.start()
        env = BenchEnv(out=out, children=children, broker=broker)
        for k in range(args.repeat):
            for name, tree in trees.items():  # interleaved: drift of the machine hits both alike
                run = _one(sc, load, env, out / name / f"run-{k + 1}", tree, args.profile, args.how)
                runs[name].append(run)
                print(
                    f"{name} run {k + 1}: "
                    + ", ".join(f"{f} {_fmt(run.get(f))}" for f in FIGURES)
                    + f", loss {'none' if run['loss']['zero_loss'] else 'YES'}, {_flatness(run)}",
                    flush=True,
                )
    medians = {
        name: {f: statistics.median(r[f] for r in rs if r.get(f) is not None) for f in FIGURES}
        for name, rs in runs.items()
    }
    for name, figures in medians.items():
        print(f"median {name} ({load.label}): " + ", ".join(f"{f} {_fmt(v)}" for f, v in figures.items()))
    return medians


def _flatness(run: dict[str, Any]) -> str:
    """Memory and backlog over the window: past saturation both must stay flat (polls late, not piled up)."""
    rss = [t["rss_mb"] for t in run["timeline"] if t["rss_mb"]]
    backlog = [t["backlog"] or 0 for t in run["timeline"]]
    if not rss:
        return "no timeline"
    return (
        f"RSS {rss[0]:.0f} -> {rss[-1]:.0f} MB (max {max(rss):.0f}), backlog {backlog[0]} -> {backlog[-1]}"
        f" events (max {max(backlog)})"
    )


def _fmt(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    main()
