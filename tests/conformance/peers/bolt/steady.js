// A sofa-rpc-node RpcClient keeping one connection to HOST:PORT and calling echo back to back, CONCURRENCY
// calls at a time, until its stdin closes. Then prints one JSON object: {"ok": N, "failed": N,
// "errors": [first few messages]}. Used to load a sidecar while it is upgraded in place.
// usage: node steady.js HOST:PORT INTERFACE [CONCURRENCY]
'use strict';
const path = require('path');

const cache = process.env.SOFAMESH_CACHE || path.join(__dirname, '..', '..', '..', '..', '.cache');
const modules = path.join(cache, 'npm', 'sofa-rpc-node', 'node_modules');
const { RpcClient } = require(path.join(modules, 'sofa-rpc-node')).client;

const [address, interfaceName, concurrencyArg] = process.argv.slice(2);
const quiet = { info() {}, warn() {}, debug() {}, error() {} };
let stopping = false;
const out = { ok: 0, failed: 0, errors: [] };

async function worker(consumer, id) {
  for (let i = 0; !stopping; i++) {
    try {
      const got = await consumer.invoke('echo', [`${id}-${i}`], { responseTimeout: 5000 });
      if (typeof got === 'string' && got.endsWith(`:${id}-${i}`)) out.ok++;
      else { out.failed++; if (out.errors.length < 5) out.errors.push(`unexpected ${JSON.stringify(got)}`); }
    } catch (err) {
      out.failed++;
      if (out.errors.length < 5) out.errors.push(`${err.name}: ${err.message}`);
    }
  }
}

async function main() {
  const client = new RpcClient({ logger: quiet });
  const consumer = client.createConsumer({ interfaceName, version: '1.0', serverHost: address });
  await consumer.ready();
  process.stdin.on('end', () => { stopping = true; });
  process.stdin.resume();
  process.stdout.write('READY\n');
  const n = Number(concurrencyArg || 4);
  await Promise.all(Array.from({ length: n }, (_, id) => worker(consumer, id)));
  await client.close();
  process.stdout.write(JSON.stringify(out) + '\n', () => process.exit(0));
}

main().catch((err) => { console.error(err); process.exit(2); });
