// A sofa-rpc-node RpcClient calling one SOFA service at a direct address, printing JSON results.
// usage: node consumer.js HOST:PORT INTERFACE CALLS_JSON [CLIENTS] [FRAMING]
// CALLS_JSON: [{"method": "echo", "args": ["hi"], "timeout": 3000, "after": 0}, ...]; all calls are started at
// once (or "after" that many ms), spread round-robin over CLIENTS independent clients (one connection each; default 1).
// Prints one JSON array: [{"ok": true, "result": ...} | {"ok": false, "name": ..., "message": ...,
// "resultCode": ...}, ...] in the order of CALLS_JSON.
// FRAMING: v1 (default), v2 (Bolt v2, ver1 1) or v2crc (Bolt v2, ver1 2, CRC32 on): set on
// sofa-bolt-node's encoder, which sofa-rpc-node uses for every request.
// With BOLT_RESPONSE_HEADERS=1 it first prints {"response_headers": [...], "response_status": [...]}:
// the header map and the Bolt response status of each response in arrival order, decoded by
// sofa-bolt-node's SimpleMapSerializer (its response decoder skips the map of a hessian response and
// reports a status-only error reply without its status, so it is wrapped to read both first).
'use strict';
const path = require('path');

const cache = process.env.SOFAMESH_CACHE || path.join(__dirname, '..', '..', '..', '..', '.cache');
const modules = path.join(cache, 'npm', 'sofa-rpc-node', 'node_modules');
const { RpcClient } = require(path.join(modules, 'sofa-rpc-node')).client;
const bolt = require(path.join(modules, 'sofa-bolt-node'));

const [address, interfaceName, callsJson, clientsArg, framing] = process.argv.slice(2);
if (framing === 'v2' || framing === 'v2crc') {
  const encoder = bolt.encoder;
  bolt.encoder = function v2Encoder(...args) {
    const e = encoder.apply(this, args);
    e.protocolType = 'bolt2';
    e.boltVersion = framing === 'v2crc' ? 2 : 1;
    e.crcEnable = framing === 'v2crc';
    return e;
  };
}
const responseHeaders = [];
const responseStatus = [];
if (process.env.BOLT_RESPONSE_HEADERS === '1') {
  const lib = path.join(modules, 'sofa-bolt-node', 'lib');
  const RpcResponseCommand = require(path.join(lib, 'protocol', 'rpc_res_cmd'));
  const SimpleMapSerializer = require(path.join(lib, 'simple_map_serializer'));
  const decodeResponse = RpcResponseCommand.decode;
  RpcResponseCommand.decode = function decodeWithHeaders(byteBuffer, ctx) {
    const start = byteBuffer.position();
    responseStatus.push(byteBuffer.getShort());
    const classLen = byteBuffer.getShort();
    const headerLen = byteBuffer.getShort();
    byteBuffer.getInt(); // contentLen
    byteBuffer.skip(classLen);
    responseHeaders.push(headerLen ? SimpleMapSerializer.decode(byteBuffer.read(headerLen)) : {});
    byteBuffer.position(start);
    return decodeResponse.call(this, byteBuffer, ctx);
  };
}
const calls = JSON.parse(callsJson);
const quiet = { info() {}, warn() {}, debug() {}, error() {} };

async function main() {
  const consumers = [];
  const clients = [];
  for (let i = 0; i < Number(clientsArg || 1); i++) {
    const client = new RpcClient({ logger: quiet });
    const consumer = client.createConsumer({ interfaceName, version: '1.0', serverHost: address });
    await consumer.ready();
    clients.push(client);
    consumers.push(consumer);
  }
  const results = await Promise.all(calls.map(async (call, i) => {
    const consumer = consumers[i % consumers.length];
    // "after": start the call that many milliseconds after the others (later calls on the same connection)
    if (call.after) await new Promise((resolve) => setTimeout(resolve, call.after));
    try {
      // {"repeat": ["x", N]} as the only argument stands for "x" repeated N times (large payloads).
      const args = call.repeat ? [call.repeat[0].repeat(call.repeat[1])] : (call.args || []);
      const result = await consumer.invoke(call.method, args, { responseTimeout: call.timeout || 3000 });
      return { ok: true, result };
    } catch (err) {
      return { ok: false, name: err.name, message: err.message, resultCode: err.resultCode };
    }
  }));
  for (const client of clients) await client.close();
  if (process.env.BOLT_RESPONSE_HEADERS === '1') {
    process.stdout.write(JSON.stringify({ response_headers: responseHeaders, response_status: responseStatus }) + '\n');
  }
  // exit only once stdout is flushed: a pipe is written asynchronously
  process.stdout.write(JSON.stringify(results) + '\n', () => process.exit(0));
}

main().catch((err) => { console.error(err); process.exit(2); });
