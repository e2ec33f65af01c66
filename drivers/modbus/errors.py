"""Modbus exception codes as readable reasons, and what the driver makes of them."""

from __future__ import annotations

import logging

from edge.sdk import PointFault

EXCEPTION_NAMES: dict[int, str] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    7: "negative acknowledge",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}
# Exception codes meaning "the device itself did not answer": a gateway reporting no path or no response, and
# device failure, which pymodbus' simulator (and some gateways) send for an absent unit id.
NO_ANSWER_CODES = frozenset({4, 10, 11})
GATEWAY_CODES = frozenset({10, 11})
TIMEOUT = PointFault("timeout")


def exception_reason(code: int) -> str:
    """'modbus exception 2 (illegal data address)'."""
    return f"modbus exception {code} ({EXCEPTION_NAMES.get(code, 'unknown')})"


FAULTS: dict[int, PointFault] = {code: PointFault(exception_reason(code)) for code in EXCEPTION_NAMES}


def fault_for(code: int) -> PointFault:
    """The (shared) fault of one exception code."""
    return FAULTS.get(code) or PointFault(exception_reason(code))


def quiet_pymodbus_logging() -> None:
    """Raise the `pymodbus` logger to CRITICAL unless the operator configured it.

    pymodbus logs an ERROR with a hex dump of the last 20 frames on every timeout, and a WARNING on every
    failed connect: a silent device polled each second would fill the log. This driver reports each of those
    as a `PointFault` or a typed error instead, which the kernel logs once when a device goes down and once
    when it recovers. Configure the `pymodbus` logger explicitly (any level) to see its own messages again.
    """
    logger = logging.getLogger("pymodbus")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.CRITICAL)
