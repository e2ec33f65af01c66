"""BACnet/IP driver plug-in on bacpypes3: ReadPropertyMultiple batches, COV, commandable writes, discovery.

Public API: `BacnetDriver` (the entry point object), its models `BacnetConnection` and `BacnetPoint`, the pure
planner `plan_reads` / `BacnetPlan`, the value mapping `decode` / `qualify` / `encode_write`, the unit table
`UNITS` / `unit_for`, and `BacnetSession`.
"""

from drivers.bacnet.config import BacnetConnection, BacnetPoint
from drivers.bacnet.driver import BacnetDriver
from drivers.bacnet.plan import BacnetPlan, ReadRequest, Target, plan_reads
from drivers.bacnet.session import BacnetSession
from drivers.bacnet.units import UNITS, unit_for
from drivers.bacnet.values import decode, encode_write, qualify, tidy_real

__all__ = [
    "UNITS",
    "BacnetConnection",
    "BacnetDriver",
    "BacnetPlan",
    "BacnetPoint",
    "BacnetSession",
    "ReadRequest",
    "Target",
    "decode",
    "encode_write",
    "plan_reads",
    "qualify",
    "tidy_real",
    "unit_for",
]
