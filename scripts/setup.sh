#!/usr/bin/env bash
# Installs everything the gateway and its tests need on a Debian/Ubuntu machine:
# Mosquitto (the local bus), nats-server (the NATS JetStream bus backend and its tests), PostgreSQL (binaries for the storage backend's tests; its own service is not used), chromium and its driver (the console's browser tests), socat (virtual serial lines for RTU tests), systemd-analyze (unit checks), a Python virtual environment in .venv
# with this package and its development tools. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

missing=()
command -v python3 >/dev/null 2>&1 || missing+=(python3)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
{ command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; } || missing+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || missing+=(mosquitto-clients)
{ command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ]; } || missing+=(nats-server)  # [bus] mode = "nats" (tests/bus/test_nats_*.py)
command -v socat >/dev/null 2>&1 || missing+=(socat)
{ command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ]; } || missing+=(iproute2)  # a BMS on another host: a test network namespace
# Node.js: the sidecar example and `edge bench compare`'s Node-RED peer (bench/peer_nodered.py, Node 18+)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
compgen -G '/usr/lib/*/faketime/libfaketime.so.1' >/dev/null || missing+=(libfaketime)  # clock-step tests (docs/reliability.md)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)  # the console's browser tests (tests/console)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)  # Selenium drives chromium through Debian's driver
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)  # the PostgreSQL storage backend's tests start their own server
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# systemd-analyze checks the service unit (tests/ops/test_ops_service.py); optional: the test skips without it.
if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "setup: installing systemd (for systemd-analyze verify; it does not start in a container)"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends systemd >/dev/null \
        || echo "setup: could not install systemd; the unit verification test will be skipped"
fi

python3 - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"setup: Python 3.11 or newer is needed, found {sys.version.split()[0]}")
PY

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    python3 -m venv .venv
fi
# pip takes ~6 s even when nothing is missing (it rebuilds the editable wheel): skip it while pyproject.toml is
# the one the virtual environment was installed from.
stamp=.venv/.edge-installed
wanted="$(sha256sum pyproject.toml | cut -d' ' -f1) $(.venv/bin/python --version 2>&1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e ".[dev]"
    echo "$wanted" > "$stamp"
fi
# The Node.js sidecar example proves the module gRPC contract outside Python (tests/module_host/test_sidecar.py).
if command -v npm >/dev/null 2>&1 && [ ! -d examples/sidecar-node/node_modules ]; then
    echo "setup: installing the Node.js sidecar example's packages"
    (cd examples/sidecar-node && npm ci --no-audit --no-fund --silent)
fi
mosquitto_bin=$(command -v mosquitto || echo /usr/sbin/mosquitto)
echo "setup: done ($(.venv/bin/python --version), $("$mosquitto_bin" -h 2>&1 | head -1))"
