// A Dubbo 2 provider built on @dubbo.ts/provider + @dubbo.ts/application, bound to 127.0.0.1.
// Usage: node provider.js --name NAME [--port N]   (port 0 = any free port)
//        [--zookeeper HOST:PORT --interface I [--version V] [--group G]]
//        [--nacos HOST:PORT --nacos-modules DIR --interface I [--version V] [--group G]]
// With --zookeeper, @dubbo.ts/zookeeper (the framework's own registry) publishes the provider node
// of interface I in the Dubbo layout (/dubbo/I/providers/<url>) once listening; --port must then
// be a real port, since that is what the node advertises.
// @dubbo.ts has no Nacos registry of its own, so with --nacos the npm nacos naming client (from DIR)
// registers the provider the way Dubbo's NacosRegistry does: service providers:I:V:G (empty V / G
// left empty) in DEFAULT_GROUP, an ephemeral instance whose metadata is the provider URL's
// parameters (those @dubbo.ts/zookeeper writes, in its keys: the group as default.group, which
// Dubbo's URL.getParameter falls back to) plus the protocol and path NacosRegistry adds; on SIGTERM it deregisters before exiting, as Dubbo
// unregisters on shutdown.
// Prints one JSON line {"ready": true, "port": N, "name": NAME} once listening (and published).
// Serves every interface; methods:
//   echo(String) -> the string            add(int, int) -> the sum
//   greet(Map)  -> {greeting, name, n}     concat(List<String>, String) -> joined string
//   whoami()    -> {provider, interface, version, group, method, attachments}
//                  (any method whose name starts with "whoami" behaves so)
//   fail(String) -> throws Error(msg)      slow(int ms) -> "slept <ms>" after ms milliseconds
//   nothing()   -> null                    bytes(byte[]) -> length of the bytes
//   entries(Map) -> the map plus size      reverse(List) -> the list reversed
//   sayHello(String) -> "Hello <s>, response from <NAME>" (Aeraki's dubbo sample DemoService)
//   calls()     -> how many calls of each method this provider answered so far (itself not counted)
//   $invoke(method, types, args) with attachment generic=true -> that method's answer (Dubbo's
//                  generic call, answered as Dubbo's GenericFilter does: see generic() below)
'use strict';
const net = require('net');

// @dubbo.ts/provider calls server.listen(port, cb), which binds every interface: force loopback.
const origListen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === 'number' && typeof args[1] === 'function') {
    return origListen.call(this, args[0], '127.0.0.1', args[1]);
  }
  return origListen.apply(this, args);
};

const { Application } = require('@dubbo.ts/application');
const { Provider } = require('@dubbo.ts/provider');

function arg(name, dflt) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : dflt;
}

const name = arg('name', 'provider');
const app = new Application();
app.port = Number(arg('port', '0'));
app.application = name;
app.heartbeat = 0; // no timer; heartbeats from the consumer side are still answered
const provider = new Provider(app);
app.useProvider(provider);

const zkHosts = arg('zookeeper', '');
let registry = null;
if (zkHosts) {
  // @dubbo.ts advertises the first non-loopback IPv4 address; tests live on loopback only.
  require('@dubbo.ts/utils/dist/host').localhost = '127.0.0.1';
  const { ZooKeeper } = require('@dubbo.ts/zookeeper');
  registry = new ZooKeeper(app, { host: zkHosts, sessionTimeout: 4000 });
  app.useRegistry(registry);
  const options = { version: arg('version', undefined), group: arg('group', undefined) };
  registry.addProviderService(arg('interface', ''), ['echo', 'add', 'greet', 'concat', 'whoami', 'fail', 'slow',
    'nothing', 'bytes'], options);
}

const nacosServer = arg('nacos', '');
let nacos = null;
if (nacosServer) {
  const path = require('path');
  const { NacosNamingClient } = require(path.join(arg('nacos-modules', ''), 'nacos'));
  const iface = arg('interface', '');
  const version = arg('version', '');
  const group = arg('group', '');
  const quiet = { info() {}, warn() {}, debug() {}, error(e) { console.error(e); } };
  const client = new NacosNamingClient({ logger: quiet, serverList: nacosServer, namespace: 'public' });
  const serviceName = `providers:${iface}:${version}:${group}`;
  // the provider URL's query as @dubbo.ts/zookeeper builds it, in its own keys (default.group, ...)
  const { Attachment: A } = require('@dubbo.ts/protocol');
  const metadata = {
    [A.ANYHOST_KEY]: 'true', [A.APPLICATION_KEY]: name, category: 'providers', [A.DUBBO_VERSION_KEY]: app.version,
    generic: 'false', heartbeat: String(app.heartbeat), [A.INTERFACE_KEY]: iface,
    [A.METHODS_KEY]: 'echo,add,greet,concat,whoami,fail,slow,nothing,bytes', [A.PID_KEY]: String(process.pid),
    side: 'provider', [A.TIMESTAMP_KEY]: String(Date.now()), [A.RETRIES_KEY]: String(app.retries),
    [A.TIMEOUT_KEY]: String(app.timeout),
    ...(version ? { [A.VERSION_KEY]: version } : {}), ...(group ? { [A.GROUP_KEY]: group } : {}),
    protocol: 'dubbo', path: iface, // what NacosRegistry adds to the URL's parameters
  };
  nacos = {
    async register(port) {
      await client.ready();
      nacos.instance = { ip: '127.0.0.1', port, metadata, ephemeral: true };
      await client.registerInstance(serviceName, nacos.instance);
    },
    async deregister() {
      if (nacos.instance) await client.deregisterInstance(serviceName, nacos.instance);
      client.close();
    },
  };
}

const answered = {};
const methods = {
  sayHello: (s) => `Hello ${s}, response from ${name}`,
  calls: () => answered,
  echo: (s) => s,
  add: (a, b) => a + b,
  greet: (m) => ({ greeting: `hello ${m && m.name}`, name: m && m.name, n: m && m.n }),
  concat: (list, sep) => list.join(sep),
  entries: (m) => ({ ...m, size: Object.keys(m).length }),
  reverse: (list) => list.slice().reverse(),
  whoami: (schema) => ({
    provider: name,
    interface: schema.interface,
    version: schema.version,
    group: (schema.attachments && schema.attachments.group) || '',
    method: schema.method,
    attachments: schema.attachments || {},
  }),
  fail: (msg) => { throw new Error(msg); },
  slow: (ms) => new Promise((resolve) => setTimeout(() => resolve(`slept ${ms}`), ms)),
  nothing: () => null,
  bytes: (b) => (b ? b.length : -1),
};

// Generic calls, as a Java provider answers them: @dubbo.ts has no generic service, so this peer
// stands in for Dubbo's GenericFilter. A call of $invoke(String method, String[] types, Object[] args)
// carrying the attachment generic=true (or another generic mode) is the call of the named method
// with args; types, when given, must be one per argument (null: found by name alone). JSON-shaped
// arguments (maps for POJOs) are already plain objects here, as PojoUtils.realize makes them the
// method's own types in Java. Without the attachment, $invoke is an unknown method, as in Dubbo.
function generic(schema) {
  const mode = schema.attachments && schema.attachments.generic;
  if (schema.method !== '$invoke' || !mode || mode === 'false') return null;
  const [method, types, args] = schema.parameters;
  const values = args || [];
  if (types && types.length !== values.length) {
    throw new Error(`$invoke ${method}: ${types.length} types for ${values.length} arguments`);
  }
  return { method, parameters: values };
}

provider.on('data', (exec) => {
  exec(async (schema, STATUS) => {
    let call;
    try {
      call = generic(schema) || schema;
    } catch (e) {
      return { status: STATUS.BAD_REQUEST, data: `${name}: ${e.message}` };
    }
    const who = call.method.startsWith('whoami');
    const fn = who ? methods.whoami : methods[call.method];
    if (!fn) {
      return { status: STATUS.SERVICE_NOT_FOUND, data: `no method ${call.method} on ${schema.interface}` };
    }
    if (call.method !== 'calls') answered[call.method] = (answered[call.method] || 0) + 1;
    const params = who ? [schema] : call.parameters;
    try {
      return { status: STATUS.OK, data: await fn(...params) };
    } catch (e) {
      return { status: STATUS.SERVICE_ERROR, data: `${name}: ${e.message}` };
    }
  });
});
provider.on('error', (e) => console.error(e));
function ready() {
  const port = provider.tcp.address().port;
  process.stdout.write(JSON.stringify({ ready: true, port, name }) + '\n');
}
if (registry) {
  // provider:start publishes the nodes; the last one created is the provider node itself.
  registry.on('node:create', (path) => { if (path.includes('/providers/')) ready(); });
} else if (nacos) {
  provider.on('start', () => {
    nacos.register(provider.tcp.address().port).then(ready, (e) => { console.error(e); process.exit(1); });
  });
} else {
  provider.on('start', ready);
}
app.start().then(() => {
  if (!nacos) return;
  // @dubbo.ts's own SIGTERM listener (added by app.start) closes and exits at once, which would race
  // the deregistration: as Dubbo's shutdown hook, deregister first, then hand over to its close.
  process.removeAllListeners('SIGTERM');
  process.on('SIGTERM', () => {
    nacos.deregister().then(() => process.emit('SIGINT'), (e) => { console.error(e); process.exit(1); });
  });
}).catch((e) => { console.error(e); process.exit(1); });
