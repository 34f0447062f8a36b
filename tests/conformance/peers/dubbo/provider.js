// A Dubbo 2 provider built on @dubbo.ts/provider + @dubbo.ts/application, bound to 127.0.0.1.
// Usage: node provider.js --name NAME [--port N]   (port 0 = any free port)
// Prints one JSON line {"ready": true, "port": N, "name": NAME} once listening.
// Serves every interface; methods:
//   echo(String) -> the string            add(int, int) -> the sum
//   greet(Map)  -> {greeting, name, n}     concat(List<String>, String) -> joined string
//   whoami()    -> {provider, interface, version, group, method, attachments}
//                  (any method whose name starts with "whoami" behaves so)
//   fail(String) -> throws Error(msg)      slow(int ms) -> "slept <ms>" after ms milliseconds
//   nothing()   -> null                    bytes(byte[]) -> length of the bytes
//   sayHello(String) -> "Hello <s>, response from <NAME>" (Aeraki's dubbo sample DemoService)
//   calls()     -> how many calls of each method this provider answered so far (itself not counted)
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

const answered = {};
const methods = {
  sayHello: (s) => `Hello ${s}, response from ${name}`,
  calls: () => answered,
  echo: (s) => s,
  add: (a, b) => a + b,
  greet: (m) => ({ greeting: `hello ${m && m.name}`, name: m && m.name, n: m && m.n }),
  concat: (list, sep) => list.join(sep),
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

provider.on('data', (exec) => {
  exec(async (schema, STATUS) => {
    const who = schema.method.startsWith('whoami');
    const fn = who ? methods.whoami : methods[schema.method];
    if (!fn) {
      return { status: STATUS.SERVICE_NOT_FOUND, data: `no method ${schema.method} on ${schema.interface}` };
    }
    if (schema.method !== 'calls') answered[schema.method] = (answered[schema.method] || 0) + 1;
    const params = who ? [schema] : schema.parameters;
    try {
      return { status: STATUS.OK, data: await fn(...params) };
    } catch (e) {
      return { status: STATUS.SERVICE_ERROR, data: `${name}: ${e.message}` };
    }
  });
});
provider.on('error', (e) => console.error(e));
provider.on('start', () => {
  const port = provider.tcp.address().port;
  process.stdout.write(JSON.stringify({ ready: true, port, name }) + '\n');
});
app.start().catch((e) => { console.error(e); process.exit(1); });
