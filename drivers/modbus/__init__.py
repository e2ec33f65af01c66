"""Modbus TCP and RTU driver plug-in: registers, coils and discrete inputs read in coalesced, adaptive blocks.

Public API: `ModbusDriver` (the entry point object), its models `ModbusConnection` and `ModbusPoint`, the pure
`plan_reads` planner with `ModbusPlan` / `ReadRequest`, and `decode` / `encode` for single values.
"""

from drivers.modbus.config import ModbusConnection, ModbusPoint
from drivers.modbus.decode import decode, decoder_for, point_decoder
from drivers.modbus.driver import ModbusDriver, ModbusSession
from drivers.modbus.encode import encode
from drivers.modbus.planner import ModbusPlan, ReadRequest, Slot, plan_reads

__all__ = [
    "ModbusConnection",
    "ModbusDriver",
    "ModbusPlan",
    "ModbusPoint",
    "ModbusSession",
    "ReadRequest",
    "Slot",
    "decode",
    "decoder_for",
    "encode",
    "plan_reads",
    "point_decoder",
]
