// Drives one real Nacos naming client (npm nacos 2.6.3, Nacos's v1 HTTP API) for the conformance tests.
// Usage: node nacos_client.js NODE_MODULES SERVER SERVICE PORT VERSION
// Registers SERVICE at 127.0.0.1:PORT with metadata version=VERSION (the client beats on its own) and
// answers JSON-line commands on stdin: {"cmd":"discover","name":N} -> {"event":"discover","instances":[...]},
// {"cmd":"subscribe","name":N} -> an {"event":"changed","instances":[...]} line on every push,
// {"cmd":"die"} exits without deregistering. End of stdin deregisters and exits.
'use strict';
const path = require('path');
const readline = require('readline');
const [modules, server, service, port, version] = process.argv.slice(2);
const { NacosNamingClient } = require(path.join(modules, 'nacos'));

const quiet = { info() {}, warn() {}, debug() {}, error(e) { process.stderr.write(String(e && e.stack || e) + '\n'); } };
const say = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const rows = (hosts) => hosts.map((h) => ({ id: h.instanceId, address: h.ip, port: h.port, healthy: h.healthy,
  metadata: h.metadata, cluster: h.clusterName }));

(async () => {
  const client = new NacosNamingClient({ logger: quiet, serverList: server, namespace: 'public' });
  await client.ready();
  const instance = { ip: '127.0.0.1', port: Number(port), metadata: { version } };
  await client.registerInstance(service, instance);
  say({ event: 'ready' });
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', async (line) => {
    const cmd = JSON.parse(line);
    try {
      if (cmd.cmd === 'die') process.exit(0);
      if (cmd.cmd === 'discover') say({ event: 'discover', instances: rows(await client.getAllInstances(cmd.name, 'DEFAULT_GROUP', '', false)) });
      if (cmd.cmd === 'subscribe') client.subscribe(cmd.name, (hosts) => say({ event: 'changed', instances: rows(hosts) }));
    } catch (err) {
      say({ event: 'error', error: String(err && err.message || err) });
    }
  });
  rl.on('close', async () => {
    await client.deregisterInstance(service, instance);
    say({ event: 'stopped' });
    client.close();
    process.exit(0);
  });
})().catch((err) => { process.stderr.write(String(err && err.stack || err) + '\n'); process.exit(1); });
