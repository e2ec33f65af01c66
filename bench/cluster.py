"""A gateway cluster on one machine: failover measured over repeated kills, and the cluster demo.

    python -m bench.cluster failover --kills 10            # kill -9 -> the dead instance's devices polled elsewhere
    python -m bench.cluster failover --kills 10 --lease-ttl 3 --renew-interval 0.5 --renew-deadline 2
    python -m bench.cluster demo                           # `edge demo --cluster`: three instances until Ctrl-C

One site: a private PostgreSQL (bench/postgres.py) holding the shared outbox and the leases, the bench's
Mosquitto, the Modbus inverter simulator, and `edge run --instance NAME` for each instance (its own process)
on one configuration. Failover time of a kill: from the SIGKILL to the first event of the last of the victim's
devices that another instance committed to the shared outbox (the event's sample time; every process runs on
this machine's clock). After each kill the victim is started again and takes its share back (a clean
handover) before the next kill. One JSON object is printed: every kill's figures, and the median and worst.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import psycopg

from bench.postgres import PostgresServer
from bench.procs import BenchBroker, Children, free_port, wait_port
from edge.cluster import preferred_owners

ROOT = Path(__file__).resolve().parents[1]
GATEWAY = "site-cluster"
TENANTS = ("acme", "globex")


def write_config(
    path: Path, *, dsn: str, broker: int, modbus: int, devices: int, poll: float, timings: dict[str, float]
) -> Path:
    lines = [
        "# A three-instance cluster on one machine (bench/cluster.py); docs/scale.md explains each part.",
        f'[gateway]\nid = "{GATEWAY}"\ndata_dir = "data"',
        f'[bus]\nmode = "external"\nport = {broker}',
        f'[storage]\nbackend = "postgresql"\n[storage.postgresql]\ndsn = "{dsn}"\npassword = "env:EDGE_PG_PASSWORD"',
        "[cluster]\nenabled = true\n" + "\n".join(f"{k} = {v}" for k, v in timings.items()),
    ]
    lines += [f'[[tenants]]\nid = "{t}"' for t in TENANTS]
    lines.append('[[sites]]\nid = "campus"')
    for unit in range(1, devices + 1):
        lines.append(
            f'[[devices]]\nname = "inv-{unit:02d}"\ndriver = "modbus"\ntenant = "{TENANTS[unit % 2]}"\n'
            f'site = "campus"\nprofile = "sunspec-inverter"\npoll_interval = {poll}\ntimeout = 0.5\n'
            f'connection = {{ host = "127.0.0.1", port = {modbus}, unit_id = {unit} }}'
        )
    path.write_text("\n\n".join(lines) + "\n")
    return path


class Site:
    """PostgreSQL, Mosquitto, the Modbus simulator and the instances, all stopped when the block ends."""

    def __init__(
        self, workdir: Path, children: Children, devices: int, poll: float, timings: dict[str, float]
    ):
        self.workdir = workdir
        self.children = children
        self.postgres = PostgresServer(workdir / "postgres")
        self.postgres.start()
        self.dsn = self.postgres.create_database("site")
        self.broker = BenchBroker(workdir / "broker", children)
        self.broker.start()
        self.modbus = free_port()
        simulator = [sys.executable, "-m", "simulators.modbus_inverter", "--port", str(self.modbus)]
        proc = children.spawn([*simulator, "--devices", str(devices)], log=workdir / "modbus.log", cwd=ROOT)
        wait_port(self.modbus, 20.0, proc)
        self.config = write_config(
            workdir / "edge.toml",
            dsn=self.dsn,
            broker=self.broker.port,
            modbus=self.modbus,
            devices=devices,
            poll=poll,
            timings=timings,
        )
        self.env = {"EDGE_PG_PASSWORD": self.postgres.password, "PATH": "/usr/bin:/bin"}
        self.instances: dict[str, Any] = {}

    def start(self, name: str) -> None:
        argv = [sys.executable, "-m", "edge.cli", "run", "-c", str(self.config), "--instance", name]
        log = self.workdir / f"{name}.log"
        with open(log, "ab") as out:  # Children.spawn would not pass the password's environment
            proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        self.instances[name] = proc

    def kill(self, name: str) -> float:
        proc = self.instances.pop(name)
        proc.kill()
        killed = time.time()
        proc.wait(10)
        return killed

    def stop(self) -> None:
        for proc in self.instances.values():
            proc.terminate()
        for proc in self.instances.values():
            proc.wait(60)
        self.instances.clear()
        self.postgres.stop("fast")

    def query(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn, password=self.postgres.password) as db:
            return db.execute(sql, params).fetchall()  # type: ignore[arg-type]  # our own constant text

    def owners(self) -> dict[str, str]:
        """Each device's live owner (devices without one are left out)."""
        try:
            rows = self.query(
                "SELECT l.name, l.owner FROM edge_cluster.leases l JOIN edge_cluster.members m"
                " ON m.cluster = l.cluster AND m.instance = l.owner"
                " WHERE l.cluster = %s AND l.kind = 'device' AND l.expires_at > now() AND m.expires_at > now()",
                GATEWAY,
            )
        except psycopg.errors.UndefinedTable:
            return {}
        return {str(name): str(owner) for name, owner in rows}

    def settle(self, names: list[str], devices: int, within: float = 90.0) -> dict[str, str]:
        """Until each device is held by the instance all members agree on (rendezvous hashing over `names`)."""
        wanted = preferred_owners([f"inv-{unit:02d}" for unit in range(1, devices + 1)], names)
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            owners = self.owners()
            if owners == wanted:
                return owners
            time.sleep(0.2)
        raise TimeoutError(f"the cluster did not settle on {names} within {within} s: {self.owners()}")

    def first_polls_after(self, devices: list[str], since: float) -> dict[str, float]:
        rows = self.query(
            "SELECT device, min(time) FROM edge.outbox WHERE device = ANY(%s) AND sequence IS NOT NULL"
            " AND time > %s GROUP BY device",
            devices,
            since,
        )
        return {str(d): float(t) for d, t in rows}


def failover(args: argparse.Namespace) -> dict[str, Any]:
    timings = {
        "lease_ttl": args.lease_ttl,
        "renew_interval": args.renew_interval,
        "renew_deadline": args.renew_deadline,
    }
    names = [chr(ord("a") + i) for i in range(args.instances)]
    kills: list[dict[str, Any]] = []
    workdir = Path(args.out or f"bench-results/cluster-{time.strftime('%Y%m%d-%H%M%S')}").absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    with Children() as children:
        site = Site(workdir, children, args.devices, args.poll, timings)
        try:
            for name in names:
                site.start(name)
            site.settle(names, args.devices)
            for index in range(args.kills):
                time.sleep(args.settle)  # under steady load before each kill
                owners = site.owners()
                holding = [n for n in names if n in owners.values()]  # in turn, among those that hold devices
                victim = holding[index % len(holding)]
                orphans = sorted(d for d, o in owners.items() if o == victim)
                killed = site.kill(victim)
                deadline = time.monotonic() + 3 * args.lease_ttl + 30
                firsts: dict[str, float] = {}
                while len(firsts) < len(orphans) and time.monotonic() < deadline:
                    time.sleep(0.1)
                    firsts = site.first_polls_after(orphans, killed)
                moved = [t - killed for t in firsts.values()]
                kills.append(
                    {
                        "victim": victim,
                        "devices": len(orphans),
                        "all_moved": len(firsts) == len(orphans),
                        "failover_s": round(max(moved), 3) if moved else None,
                        "first_device_s": round(min(moved), 3) if moved else None,
                    }
                )
                print(f"kill {index + 1}: {kills[-1]}", file=sys.stderr)
                site.start(victim)
                site.settle(names, args.devices)
        finally:
            site.stop()
    times = [k["failover_s"] for k in kills if k["failover_s"] is not None]
    return {
        "instances": args.instances,
        "devices": args.devices,
        "poll_interval": args.poll,
        "timings": timings,
        "kills": kills,
        "failover_median_s": round(statistics.median(times), 3) if times else None,
        "failover_worst_s": max(times) if times else None,
        "all_moved": all(k["all_moved"] for k in kills),
    }


def demo(args: argparse.Namespace) -> None:
    """Three instances on one configuration until Ctrl-C, with the commands to watch them."""
    # Ctrl-C must stop it whatever it inherited: a parent that ignores SIGINT (a background job of a script,
    # a test runner's worker process) would otherwise leave the demo running with its instances stopped
    signal.signal(signal.SIGINT, signal.default_int_handler)
    timings = {
        "lease_ttl": args.lease_ttl,
        "renew_interval": args.renew_interval,
        "renew_deadline": args.renew_deadline,
    }
    workdir = Path(args.out or "var/cluster-demo").absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    names = [chr(ord("a") + i) for i in range(args.instances)]
    with Children() as children:
        site = Site(workdir, children, args.devices, args.poll, timings)
        try:
            for name in names:
                site.start(name)
            owners = site.settle(names, args.devices)
            edge = (
                f"{sys.executable} -m edge.cli" if not Path(".venv/bin/edge").exists() else ".venv/bin/edge"
            )
            env = f"EDGE_PG_PASSWORD={site.postgres.password}"
            print(
                f"cluster {GATEWAY}: instances {', '.join(names)} share {site.dsn} (PostgreSQL, port {site.postgres.port})"
            )
            print(
                f"devices: {len(owners)} Modbus inverters on 127.0.0.1:{site.modbus}; configuration {site.config}"
            )
            print(f"  {env} {edge} cluster status -c {site.config}          # members, ownership, leaders")
            print(f"  {env} {edge} cluster drain b -c {site.config}         # move b's devices off it")
            print(
                f"  mosquitto_sub -v -p {site.broker.port} -t 'edge/+/events/#'    # the events, published by each tenant's leader"
            )
            print(
                f"  kill -9 {site.instances['a'].pid}    # instance a: its devices move within about {args.lease_ttl + 2 * args.renew_interval:.0f} s"
            )
            print("Ctrl-C stops everything.")
            while True:
                time.sleep(1.0)
                for name, proc in list(site.instances.items()):
                    if proc.poll() is not None:
                        print(
                            f"instance {name} ended ({proc.returncode}); starting it again", file=sys.stderr
                        )
                        site.instances.pop(name)
                        site.start(name)
        except KeyboardInterrupt:
            print("stopping: each instance hands its devices over, then exits", file=sys.stderr)
        finally:
            site.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("mode", choices=("failover", "demo"))
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--devices", type=int, default=12)
    parser.add_argument("--poll", type=float, default=1.0, help="Seconds between two polls of a device.")
    parser.add_argument("--settle", type=float, default=3.0, help="Seconds of steady load before each kill.")
    parser.add_argument("--lease-ttl", type=float, default=10.0)
    parser.add_argument("--renew-interval", type=float, default=2.0)
    parser.add_argument("--renew-deadline", type=float, default=6.0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.mode == "demo":
        demo(args)
        return
    sys.stdout.write(orjson.dumps(failover(args), option=orjson.OPT_INDENT_2).decode() + "\n")


if __name__ == "__main__":
    main()
