// A sofa-rpc-node RpcServer that publishes itself in ZooKeeper (its own ZookeeperRegistry).
// usage: node sofa_zk_provider.js ZK_HOST:PORT PORT INTERFACE TAG
// Prints "READY <port>" once published. Methods: echo(s) -> "<TAG>:<s>", whoami() -> TAG.
'use strict';
const path = require('path');

const cache = process.env.SOFAMESH_CACHE || path.join(__dirname, '..', '..', '..', '..', '.cache');
const sofa = require(path.join(cache, 'npm', 'sofa-rpc-node', 'node_modules', 'sofa-rpc-node'));

const [zk, port, interfaceName, tag] = process.argv.slice(2);
const quiet = { info() {}, warn() {}, debug() {}, error(...a) { console.error(...a); } };

async function main() {
  const registry = new sofa.registry.ZookeeperRegistry({ logger: quiet, address: zk });
  const server = new sofa.server.RpcServer({ logger: quiet, registry, port: Number(port), publishAddress: '127.0.0.1' });
  server.addService({ interfaceName, version: '1.0' }, {
    async echo(s) { return `${tag}:${s}`; },
    async whoami() { return tag; },
  });
  await server.start();
  await server.publish();
  process.stdout.write(`READY ${port}\n`);
  // unpublish and close the ZooKeeper session, so the provider node goes at once
  const stop = () => server.close().then(() => registry.close()).finally(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err) => { console.error(err); process.exit(1); });
