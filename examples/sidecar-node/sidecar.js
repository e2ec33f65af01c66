'use strict';
// A gateway sidecar in Node.js: @grpc/grpc-js with edge/sdk/proto/module.proto loaded at run time, no Python
// and no generated code. It registers, reports health, takes every telemetry Delivery, publishes one
// `org.example.node.seen` event per event (with its sequence) and then acknowledges the Delivery, so events
// a killed sidecar had not acknowledged come again when the kernel restarts it.
//
//   [[modules]]
//   name = "node"
//   command = ["node", "examples/sidecar-node/sidecar.js"]
const path = require('path');
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');

const PROTO = path.join(__dirname, '..', '..', 'edge', 'sdk', 'proto', 'module.proto');
const MANIFEST = `
name = "node"
kind = "module"
version = "0.1.0"
kernel_api = ">=1.0,<2"
entitlement = "node"
[[consumes]]
type = "org.edgegw.telemetry"
versions = ">=1.0,<2"
[[produces]]
type = "org.example.node.seen"
version = "1.0"
`;

const definition = loader.loadSync(PROTO, { keepCase: true, longs: Number, defaults: true, oneofs: true });
const api = grpc.loadPackageDefinition(definition).edgegw.module.v1;
const client = new api.ModuleHost('unix:' + process.env.EDGE_SIDECAR_SOCKET, grpc.credentials.createInsecure());
const metadata = new grpc.Metadata();
metadata.set('x-edge-token', process.env.EDGE_SIDECAR_TOKEN);

function call(method, request) {
  return new Promise((resolve, reject) =>
    client[method](request, metadata, (error, reply) => (error ? reject(error) : resolve(reply))));
}

function fail(error) {
  console.error(`node sidecar: ${error.message || error}`);
  process.exit(1);
}

async function handle(stream, delivery) {
  for (const event of delivery.events) {
    const body = JSON.parse(event.body.toString('utf8'));
    const data = { sequence: event.sequence, device: body.data.device };
    await call('Publish', {
      tenant: delivery.tenant,
      type: 'org.example.node.seen',
      subject: event.subject,
      data_json: Buffer.from(JSON.stringify(data)),
    });
  }
  const last = delivery.events[delivery.events.length - 1];
  stream.write({ ack: { tenant: delivery.tenant, position: last.position } });
}

async function main() {
  const registered = await call('Register', { manifest_toml: MANIFEST });
  const interval = (registered.health_interval || 2) * 1000;
  setInterval(() => call('Health', { ok: true, detail: 'node sidecar' }).catch(fail), interval);
  const stream = client.Subscribe(metadata);
  stream.write({ subscription: { name: 'seen', types: ['org.edgegw.telemetry'], max_batch: 100 } });
  let chain = Promise.resolve(); // one delivery at a time, in order
  stream.on('data', (delivery) => { chain = chain.then(() => handle(stream, delivery)).catch(fail); });
  stream.on('error', fail);
  stream.on('end', () => fail('the kernel ended the subscription'));
  process.on('SIGTERM', () => process.exit(0));
}

main().catch(fail);
