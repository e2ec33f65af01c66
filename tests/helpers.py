"""Test helpers shared by many tests: free ports and a private Mosquitto broker process."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


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

    def __init__(self, port: int, topic: str = "#", client_id: str | None = None) -> None:
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
        self._client.on_connect = lambda c, u, f, rc, p: (c.subscribe(topic, qos=1), self._connected.set())
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        if not self._connected.wait(10):
            raise TimeoutError("recorder could not connect")

    def _on_message(self, client: object, userdata: object, msg: object) -> None:
        with self._lock:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain)))  # type: ignore[attr-defined]

    def snapshot(self) -> list[tuple[str, bytes, bool]]:
        with self._lock:
            return list(self.messages)

    def wait_for(self, predicate: object, timeout: float = 20.0) -> list[tuple[str, bytes, bool]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.snapshot()
            if predicate(got):  # type: ignore[operator]
                return got
            time.sleep(0.05)
        raise TimeoutError(f"condition not met within {timeout}s; {len(self.snapshot())} messages received")

    def publish(self, topic: str, payload: bytes) -> None:
        self._client.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


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
