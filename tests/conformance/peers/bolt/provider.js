// A sofa-rpc-node RpcServer on 127.0.0.1 exposing one SOFA service with several methods.
// usage: node -r ./loopback.js provider.js PORT INTERFACE[,INTERFACE...] TAG
// Prints "READY <port>" once listening. Methods: echo(s) -> "<TAG>:<s>", plus(a, b), whoami() -> TAG,
// fail(msg) throws, slow(ms) answers after ms milliseconds, calls() -> how many calls of the other
// methods this provider answered so far, headers() -> the Bolt header map of that very request, as
// sofa-bolt-node's own SimpleMapSerializer decodes it (a hessian request's map is skipped by
// sofa-bolt-node, so its request decoder is wrapped to read the map first).
// Maps, lists and POJOs (arguments arrive as hessian.js decodes them: maps and POJOs as plain
// objects; answers go as hessian.js encodes them: a plain object as a map, {$class, $} as an object
// of that class): greet(Map or com.sofamesh.demo.Person) -> a com.sofamesh.demo.Greeting POJO
// {greeting, name, n}; entries(Map) -> the map plus size; reverse(List) -> the list reversed.
// probe(...) -> {args, methodArgSigs, genericType}: what the request carried (arguments, its
// SofaRequest's argument types, its sofa_head_generic_type header or null).
// Generic calls: SOFARPC's consumer revises GenericService.$invoke(method, types, args) into the
// named method with those types before it leaves (ConsumerGenericFilter, header
// sofa_head_generic_type 0, generic.revise true), and the Java provider serves it as any call of
// that method, found by name and argument types; sofa-rpc-node finds methods by name alone, so
// this peer answers such calls as the Java provider would, and probe shows what arrived.
'use strict';
const path = require('path');

const cache = process.env.SOFAMESH_CACHE || path.join(__dirname, '..', '..', '..', '..', '.cache');
const { RpcServer } = require(path.join(cache, 'npm', 'sofa-rpc-node', 'node_modules', 'sofa-rpc-node')).server;

const boltLib = path.join(cache, 'npm', 'sofa-rpc-node', 'node_modules', 'sofa-bolt-node', 'lib');
const RpcRequestCommand = require(path.join(boltLib, 'protocol', 'rpc_req_cmd'));
const SimpleMapSerializer = require(path.join(boltLib, 'simple_map_serializer'));
const decodeRequest = RpcRequestCommand.decode;
RpcRequestCommand.decode = function decodeWithHeaders(byteBuffer, ctx) {
  const start = byteBuffer.position();
  const classLen = byteBuffer.getShort();
  const headerLen = byteBuffer.getShort();
  byteBuffer.getInt(); // contentLen
  byteBuffer.skip(classLen);
  const headers = headerLen ? SimpleMapSerializer.decode(byteBuffer.read(headerLen)) : {};
  byteBuffer.position(start);
  const ret = decodeRequest.call(this, byteBuffer, ctx);
  if (ret.data && ret.data.methodName === 'headers') ret.data.args = [headers];
  if (ret.data && ret.data.methodName === 'probe') {
    const { args, methodArgSigs } = ret.data;
    ret.data.args = [{ args, methodArgSigs, genericType: headers.sofa_head_generic_type || null }];
  }
  return ret;
};

const [port, interfaces, tag] = process.argv.slice(2);
const quiet = { info() {}, warn() {}, debug() {}, error(...a) { console.error(...a); } };

async function main() {
  const server = new RpcServer({ logger: quiet, port: Number(port) });
  let answered = 0;
  for (const interfaceName of interfaces.split(',')) {
    server.addService({ interfaceName, version: '1.0' }, {
      async echo(s) { answered += 1; return `${tag}:${s}`; },
      async plus(a, b) { answered += 1; return a + b; },
      async whoami() { answered += 1; return tag; },
      async calls() { return answered; },
      async headers(h) { answered += 1; return h; },
      async probe(seen) { answered += 1; return seen; },
      async greet(m) {
        answered += 1;
        return { $class: 'com.sofamesh.demo.Greeting', $: { greeting: `hello ${m.name}`, name: m.name, n: m.n } };
      },
      async entries(m) { answered += 1; return { ...m, size: Object.keys(m).length }; },
      async reverse(list) { answered += 1; return list.slice().reverse(); },
      async fail(msg) { throw new Error(`fail: ${msg}`); },
      async slow(ms) {
        await new Promise((resolve) => setTimeout(resolve, ms));
        return `${tag}:slept ${ms}`;
      },
    });
  }
  await server.start();
  process.stdout.write(`READY ${port}\n`);
  const stop = () => process.exit(0); // at once, dropping calls in flight (tests rely on it)
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err) => { console.error(err); process.exit(1); });
