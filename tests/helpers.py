"""Test helpers shared by many tests: bounded waits, free ports and a private Mosquitto broker process."""

from __future__ import annotations

import asyncio
import inspect
import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

WITHIN = 10.0  # seconds a wait gives its condition unless the call says otherwise


class WaitTimedOut(AssertionError, TimeoutError):
    """A bounded wait ran out: a test failure (AssertionError), and a TimeoutError for callers that expect
    one (`pytest.raises(OSError)` around `wait_port` on a closed port)."""


def wait_until(
    predicate: Callable[[], T | None],
    within: float = WITHIN,
    what: str | None = None,
    *,
    step: float = 0.05,
    detail: Callable[[], object] | None = None,
) -> T:
    """Poll `predicate` until it returns something truthy, and return that; after `within` seconds raise
    WaitTimedOut naming `what` was awaited (by default the predicate's source) and `detail()`."""
    deadline = time.monotonic() + within
    while not (got := predicate()):
        if time.monotonic() >= deadline:
            raise WaitTimedOut(_timed_out(predicate, within, what, detail))
        time.sleep(step)
    return got


async def until(
    predicate: Callable[[], T | Awaitable[T | None] | None],
    within: float = WITHIN,
    what: str | None = None,
    *,
    step: float = 0.02,
    detail: Callable[[], object] | None = None,
) -> T:
    """`wait_until` for async tests: yields to the loop between polls; the predicate may also be an
    `async def` (its result is awaited on each poll)."""
    deadline = time.monotonic() + within
    while True:
        result = predicate()
        got: T | None = await result if inspect.isawaitable(result) else result
        if got:
            return got
        if time.monotonic() >= deadline:
            raise WaitTimedOut(_timed_out(predicate, within, what, detail))
        await asyncio.sleep(step)


def _timed_out(
    predicate: Callable[[], object], within: float, what: str | None, detail: Callable[[], object] | None
) -> str:
    message = f"timed out after {within} s waiting for {what or _describe(predicate)}"
    return f"{message}; {detail()}" if detail is not None else message


def _describe(predicate: Callable[..., object]) -> str:
    """A lambda's source line (what the test waited for, in its own words), else the function's name."""
    name = getattr(predicate, "__qualname__", repr(predicate))
    if not name.endswith("<lambda>"):
        return name
    try:
        source = " ".join(line.strip() for line in inspect.getsource(predicate).splitlines())
    except (OSError, TypeError):
        return name
    return source if len(source) <= 200 else f"{source[:197]}..."


# Ports the tests' servers listen on come from below the kernel's ephemeral range (32768-60999 here), where
# no client socket is given a local port, and each pytest-xdist worker takes its own slice of it, so two
# workers never pick the same port between the check and the server's bind. A cursor walks the slice from a
# random start (another run on this machine starts elsewhere), so a process hands out a port once per lap.
TEST_PORTS = range(20000, 32000)
_cursor: dict[int, int] = {}


def _worker_ports() -> range:
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    index = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    size = len(TEST_PORTS) // max(count, 1)
    return TEST_PORTS[index * size : (index + 1) * size]


def _free(kind: socket.SocketKind, host: str) -> int:
    ports = _worker_ports()
    for _ in range(len(ports)):  # bounded: one lap of the slice
        at = _cursor.get(kind, random.randrange(len(ports)))
        _cursor[kind] = (at + 1) % len(ports)
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((host, ports[at]))
            except OSError:  # in use, by another run or one of ours still in TIME_WAIT
                continue
            return ports[at]
    raise OSError(f"no free port in {ports} on {host}")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on, for a server a test starts."""
    return _free(socket.SOCK_STREAM, host)


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A free UDP port on `host` (BACnet/IP peers on loopback need distinct ports: docs in simulators/)."""
    return _free(socket.SOCK_DGRAM, host)


def small_config(tmp_path: Path, gateway_id: str) -> Path:
    """A configuration file with one tenant (`acme`) and one site (`hq`) and no device yet, for CLI tests
    that add devices to it."""
    path = tmp_path / "edge.toml"
    path.write_text(
        f'[gateway]\nid = "{gateway_id}"\ndata_dir = "data"\n[[tenants]]\nid = "acme"\n[[sites]]\nid = "hq"\n'
    )
    return path


async def run_edge(*args: str) -> tuple[int, str, str]:
    """`edge ARGS` in a worker thread (commands run their own event loop): exit code, stdout, stderr."""
    from typer.testing import CliRunner

    from edge.cli import app

    result = await asyncio.to_thread(CliRunner().invoke, app, list(args))
    return result.exit_code, result.stdout, result.stderr


def wait_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    wait_until(lambda: _listens(host, port), timeout, f"something to listen on {host}:{port}")


def _listens(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class MosquittoProcess:
    """A private Mosquitto on 127.0.0.1:<port>, which a test may stop, kill and start again."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        self.conf = workdir / "mosquitto-test.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "max_queued_messages 100000\n"
            "max_inflight_messages 1000\n"
            "set_tcp_nodelay true\n"
            "log_dest stderr\n"
            "log_type error\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL)
        wait_port(self.port)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        self.proc = None


class MqttRecorder:
    """A plain paho subscriber in its own thread that records what it receives, as a local system would."""

    def __init__(
        self, port: int, topic: str = "#", client_id: str | None = None, login: tuple[str, str] | None = None
    ) -> None:
        import threading

        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"rec-{free_port()}",
            protocol=mqtt.MQTTv5,
        )
        if login is not None:
            self._client.username_pw_set(*login)
        self._client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        # ready once the broker confirmed the subscription: a message published after __init__ reaches it
        self._client.on_subscribe = lambda c, u, mid, codes, p: self._connected.set()
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        if not self._connected.wait(10):
            raise TimeoutError("recorder could not connect and subscribe")

    def _on_message(self, client: object, userdata: object, msg: object) -> None:
        with self._lock:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain)))  # type: ignore[attr-defined]

    def snapshot(self) -> list[tuple[str, bytes, bool]]:
        with self._lock:
            return list(self.messages)

    def wait_for(
        self, predicate: Callable[[list[tuple[str, bytes, bool]]], object], timeout: float = 20.0
    ) -> list[tuple[str, bytes, bool]]:
        """The messages received so far, once `predicate` holds on them."""

        def matched() -> tuple[list[tuple[str, bytes, bool]]] | None:
            got = self.snapshot()
            return (got,) if predicate(got) else None  # a tuple: truthy even when no message is the answer

        (got,) = wait_until(
            matched, timeout, _describe(predicate), detail=lambda: f"{len(self.snapshot())} messages received"
        )
        return got

    def publish(self, topic: str, payload: bytes) -> None:
        self._client.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def mqtt_connack(port: int, username: str | None = None, password: str | None = None) -> int:
    """The broker's CONNACK reason code for this login, as a paho client sees it (0: accepted; -1: nothing
    listening yet, or no answer within 5 s)."""
    import paho.mqtt.client as mqtt

    codes: list[int] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"login-{free_port()}")
    if username is not None:
        client.username_pw_set(username, password)
    client.on_connect = lambda c, u, f, rc, p: codes.append(int(rc.value))
    try:
        client.connect("127.0.0.1", port)
    except ConnectionRefusedError:
        return -1
    for _ in range(50):  # bounded: 50 turns of at most 0.1 s
        client.loop(0.1)
        if codes:
            break
    client.disconnect()
    return codes[0] if codes else -1


class SimulatorProcess:
    """The Modbus inverter simulator as its own process, which a test may kill and start again."""

    def __init__(self, port: int, devices: int, extra: list[str] | None = None) -> None:
        self.port, self.devices, self.extra = port, devices, extra or []
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import sys

        cmd = [sys.executable, "-m", "simulators.modbus_inverter", "--port", str(self.port)]
        cmd += ["--devices", str(self.devices), "--update-interval", "0.2", *self.extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        wait_port(self.port, 20)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> SimulatorProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
