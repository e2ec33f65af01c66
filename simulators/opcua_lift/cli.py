"""`python -m simulators.opcua_lift` and `main()`, which `edge simulate opcua` runs."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence
from pathlib import Path

from simulators.opcua_lift.nodes import NAMESPACE_URI
from simulators.opcua_lift.security import POLICIES
from simulators.opcua_lift.server import LiftSimulator


def quiet_asyncua_logging(level: int = logging.ERROR) -> None:
    """asyncua's server logs every session and service fault; keep the simulator's console readable."""
    logging.getLogger("asyncua").setLevel(level)
    logging.getLogger("asyncua.server.uaprocessor").setLevel(max(level, logging.CRITICAL))  # service faults


async def main(
    port: int = 4840,
    lifts: int = 2,
    *,
    floors: int = 10,
    host: str = "127.0.0.1",
    security: Sequence[str] = ("None",),
    certificate: Path | None = None,
    private_key: Path | None = None,
    pki_dir: Path | None = None,
    trusted_clients: Path | None = None,
    update_interval: float = 0.1,
    churn: bool = False,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until `stop` is set or SIGINT/SIGTERM arrives; prints one line when ready."""
    quiet_asyncua_logging()
    sim = LiftSimulator(
        port,
        lifts,
        floors=floors,
        host=host,
        security=security,
        certificate=certificate,
        private_key=private_key,
        pki_dir=pki_dir,
        trusted_clients=trusted_clients,
        update_interval=update_interval,
        churn=churn,
    )
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await sim.start()
    cert = f", server certificate {sim.certificate}" if sim.certificate else ""
    print(
        f"OPC UA lift simulator: {lifts} lifts at {sim.url} (namespace {NAMESPACE_URI}, ns={sim.namespace_index}), "
        f"security {'/'.join(sim.security)}{cert}",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await sim.stop()


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.opcua_lift", description="OPC UA lift-controller simulator"
    )
    parser.add_argument("--port", type=int, default=4840)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--lifts", type=int, default=2)
    parser.add_argument("--floors", type=int, default=10)
    parser.add_argument("--security", nargs="+", default=["None"], choices=list(POLICIES))
    parser.add_argument("--certificate", type=Path, help="server certificate (DER/PEM); made up if absent")
    parser.add_argument("--private-key", type=Path)
    parser.add_argument("--pki-dir", type=Path, help="keep the made-up server certificate here across runs")
    parser.add_argument("--trusted-clients", type=Path, help="directory of trusted client certificates")
    parser.add_argument("--update-interval", type=float, default=0.1)
    parser.add_argument("--churn", action="store_true", help="benchmark load: ten values per lift per update")
    return parser.parse_args(argv)


def run(argv: Sequence[str] | None = None) -> None:
    """The command line: serve until SIGINT or SIGTERM."""
    args = _parse(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            main(
                args.port,
                args.lifts,
                floors=args.floors,
                host=args.host,
                security=args.security,
                certificate=args.certificate,
                private_key=args.private_key,
                pki_dir=args.pki_dir,
                trusted_clients=args.trusted_clients,
                update_interval=args.update_interval,
                churn=args.churn,
            )
        )
