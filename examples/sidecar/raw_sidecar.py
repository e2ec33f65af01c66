"""A sidecar written against the published gRPC contract only (edge/sdk/proto/module.proto's generated stubs,
grpc's blocking API, threads): no edge SDK, no asyncio. It is the pattern a partner follows in any language
with that .proto, and the tests use it to prove the contract.

It registers with its own manifest, reports health from a thread, takes every telemetry Delivery, publishes
one `org.example.raw.seen` event per event (with the sequence) and then acknowledges the Delivery. With
RAW_SIDECAR_PUBLISH=0 it only acknowledges (the module benchmark measures delivery alone that way).

Run it by naming it in the gateway's configuration:

    [[modules]]
    name = "raw"
    command = ["python", "examples/sidecar/raw_sidecar.py"]
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading

import grpc

from edge.sdk.proto import module_pb2 as pb
from edge.sdk.proto import module_pb2_grpc as pb_grpc

MANIFEST = """
name = "raw"
kind = "module"
version = "0.3.1"
kernel_api = ">=1.0,<2"
entitlement = "raw"
run_mode = "isolated"
[[consumes]]
type = "org.edgegw.telemetry"
versions = ">=1.0,<2"
[[produces]]
type = "org.example.raw.seen"
version = "1.0"
"""


def main() -> int:
    metadata = (("x-edge-token", os.environ["EDGE_SIDECAR_TOKEN"]),)
    channel = grpc.insecure_channel("unix:" + os.environ["EDGE_SIDECAR_SOCKET"])
    stub = pb_grpc.ModuleHostStub(channel)
    reply = stub.Register(pb.RegisterRequest(manifest_toml=MANIFEST), metadata=metadata)
    done = threading.Event()

    def report_health() -> None:
        while not done.wait(reply.health_interval):
            stub.Health(pb.HealthReport(ok=True, detail="raw sidecar"), metadata=metadata)

    threading.Thread(target=report_health, daemon=True).start()
    outgoing: queue.Queue[pb.SubscribeRequest] = queue.Queue()
    outgoing.put(
        pb.SubscribeRequest(
            subscription=pb.Subscription(name="seen", types=["org.edgegw.telemetry"], max_batch=100)
        )
    )
    publish = os.environ.get("RAW_SIDECAR_PUBLISH", "1") != "0"
    for delivery in stub.Subscribe(iter(outgoing.get, None), metadata=metadata):
        for event in delivery.events if publish else ():
            body = json.loads(event.body)
            data = {"sequence": event.sequence, "device": body["data"]["device"]}
            stub.Publish(
                pb.PublishRequest(
                    tenant=delivery.tenant,
                    type="org.example.raw.seen",
                    subject=event.subject,
                    data_json=json.dumps(data).encode(),
                ),
                metadata=metadata,
            )
        outgoing.put(
            pb.SubscribeRequest(ack=pb.Ack(tenant=delivery.tenant, position=delivery.events[-1].position))
        )
    done.set()
    return 0


if __name__ == "__main__":
    sys.exit(main())
