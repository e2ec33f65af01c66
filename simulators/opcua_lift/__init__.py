"""OPC UA lift-controller simulator: N lifts in one asyncua server, moving plausibly, with fault injection.

An independent device: it imports nothing from `edge` or `drivers` (its own certificate code is below) and
builds its address space from the OPC UA model written out here. Namespace `urn:edge-gw:sim:lift`:

    Objects/Lifts/Lift<n>            (object, node id "ns=<i>;s=Lift<n>")
        CurrentFloor      Int16     floor the car is at or nearest to
        Direction         String    "up" | "down" | "idle"
        DoorOpen          Boolean   true from the moment the doors start opening until they are closed
        CarLoad           Double    kg          (EngineeringUnits KGM, EURange 0..rated load)
        TripCounter       UInt32    completed trips
        RunHours          Double    h           (HUR) motor running time
        Position          Double    m           (MTR) car height above floor 0
        Speed             Double    m/s         (MTS)
        MotorTemperature  Double    °C          (CEL)
        FaultCode         UInt16    writable: 0 = none, 31 = stuck between floors, 42 = door fault; write 0 to reset
        InService         Boolean   writable: false parks the lift after its current trip
        TargetFloor       Int16     writable: commands a trip (BadOutOfRange outside 0..floors-1,
                                    BadInvalidState while faulted or out of service)

Every variable's node id is "ns=<i>;s=Lift<n>.<Name>". Fault injection: `stick(n)` (stuck between floors),
`door_fault(n)`, `fault(n, code)` (any other fault code, the car stopped level), `clear(n)`, `set_quality(n, name, "BadSensorFailure")` (a sensor fault: the variable's
status code), and `restart()` (the server goes away and comes back on the same port with a new
address-space instance: sessions and subscriptions are lost, the lifts' state carries on).
`max_subscriptions=0` makes the server refuse subscriptions (BadTooManySubscriptions), as a busy or minimal
server does. `churn=True` changes ten variables of every lift on every update (a load generator for
benchmarks, not a lift). `advance(seconds)` moves the lifts without a server, for tests of the physics.
The server's CurrentTime clock loop is disabled (it made every stop take a second).

Security: a list of policies ("None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss");
each secure one is offered with Sign and SignAndEncrypt. Without a certificate the simulator makes its own
(self-signed, SAN URI = `APPLICATION_URI`), in a temporary directory or, with `pki_dir`, once and for all in
that directory (`server_cert.der` is what a client puts on its trust list). Client certificates are checked against `trusted_clients` (a
directory of DER/PEM certificates; empty or missing: every client certificate is refused) when given;
otherwise any client certificate is accepted, as asyncua's server does by default. `users` turns off anonymous
access and accepts those user names and passwords.

Command line: `python -m simulators.opcua_lift --port 4840 --lifts 4 [--security Basic256Sha256 ...]`.
"""

from simulators.opcua_lift.cli import main, quiet_asyncua_logging
from simulators.opcua_lift.model import FAULT_DOOR, FAULT_NONE, FAULT_STUCK, FLOOR_HEIGHT_M, LiftState
from simulators.opcua_lift.nodes import APPLICATION_URI, NAMESPACE_URI, unit_id
from simulators.opcua_lift.security import make_certificate
from simulators.opcua_lift.server import LiftSimulator

__all__ = [
    "APPLICATION_URI",
    "FAULT_DOOR",
    "FAULT_NONE",
    "FAULT_STUCK",
    "FLOOR_HEIGHT_M",
    "NAMESPACE_URI",
    "LiftSimulator",
    "LiftState",
    "main",
    "make_certificate",
    "quiet_asyncua_logging",
    "unit_id",
]
