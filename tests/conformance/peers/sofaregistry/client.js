'use strict';
// A sofa-registry-node@0.0.1 client driven by JSON lines on stdin; prints JSON lines.
// usage: node client.js <node_modules> <endpoint> <httpPort> <appname>
// stdin: {"op":"publish","dataId":..,"data":[..]} | {"op":"subscribe","dataId":..}
//        {"op":"unregister","dataId":..} | {"op":"unsubscribe","dataId":..}
// stdout: {"event":"ready"} | {"event":"data","dataId":..,"value":{localZone, zoneData}} | {"event":"done","op":..}
const [ modules, endpoint, port, appname ] = process.argv.slice(2);
const http = require('http');
const readline = require('readline');
require(modules + '/sofa-registry-node'); // registers the registry's hessian class map with sofa-bolt-node
// The RegistryClient of index.js is a cluster-client wrapper (leader/follower processes) around this
// DataClient, which does all the protocol work; the test drives the DataClient directly.
const DataClient = require(modules + '/sofa-registry-node/lib/client');
const Config = require(modules + '/sofa-registry-node/lib/config');

const out = obj => process.stdout.write(JSON.stringify(obj) + '\n');
const httpclient = {
  request(url, opts) {
    const qs = new URLSearchParams();
    for (const [ k, v ] of Object.entries(opts.data || {})) if (v !== undefined && v !== null) qs.set(k, v);
    return new Promise((resolve, reject) => {
      http.get(url + '?' + qs.toString(), res => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', c => { body += c; });
        res.on('end', () => resolve({ status: res.statusCode, data: body }));
      }).on('error', reject);
    });
  },
};
const logger = {
  info(...a) { if (process.env.SOFAREG_DEBUG) process.stderr.write('INFO ' + a.map(x => typeof x === 'object' ? JSON.stringify(x) : String(x)).join(' ') + '\n'); },
  debug() {},
  warn(...a) { process.stderr.write('WARN ' + a.map(String).join(' ') + '\n'); },
  error(...a) { process.stderr.write('ERROR ' + a.map(x => (x && x.stack) || String(x)).join(' ') + '\n'); },
};
const client = new DataClient({
  httpclient, logger,
  config: new Config({ endpoint, port: Number(port), appname, zone: 'DEFAULT_ZONE', dataCenter: 'DefaultDataCenter',
    instanceId: 'sofamesh-test' }),
});
// sofa-registry-node 0.0.1 can livelock: its worker skips a task younger than 200 ms, and its
// RegistryCheck replaces every unacknowledged task with a new one on the same period as the
// worker's wake-up (recheckInterval), so when the recheck runs just before the worker a register
// is never sent. Ringing the worker's bell more often makes it send within one period; the
// bytes on the wire are the client's own.
const bell = setInterval(() => client.worker.signal(), 100);
client.ready().then(() => out({ event: 'ready' }), e => { out({ event: 'error', message: e.message }); process.exit(2); });
const listeners = {};
readline.createInterface({ input: process.stdin }).on('line', line => {
  const cmd = JSON.parse(line);
  if (cmd.op === 'publish') client.register({ dataId: cmd.dataId, data: cmd.data, group: cmd.group });
  else if (cmd.op === 'unregister') client.unregister({ dataId: cmd.dataId, group: cmd.group });
  else if (cmd.op === 'subscribe') {
    listeners[cmd.dataId] = value => out({ event: 'data', dataId: cmd.dataId, value });
    client.subscribe({ dataId: cmd.dataId, group: cmd.group, type: 'address' }, listeners[cmd.dataId]);
  } else if (cmd.op === 'unsubscribe') client.unSubscribe({ dataId: cmd.dataId, group: cmd.group, type: 'address' });
  out({ event: 'done', op: cmd.op, dataId: cmd.dataId });
}).on('close', () => { clearInterval(bell); client.close(); setTimeout(() => process.exit(0), 200); });
