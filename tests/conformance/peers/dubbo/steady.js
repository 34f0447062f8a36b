// A dubbo2.js DirectlyDubbo consumer (one connection) calling echo on HOST:PORT back to back,
// CONCURRENCY calls at a time, until its stdin closes. Then prints one JSON object:
// {"ok": N, "failed": N, "errors": [first few messages]}. Loads a sidecar while it is upgraded in place.
// usage: node steady.js HOST:PORT [CONCURRENCY]
'use strict';
const { DirectlyDubbo } = require('dubbo2.js');

const [target, concurrencyArg] = process.argv.slice(2);
const dubbo = DirectlyDubbo.from({ dubboAddress: target, dubboVersion: '2.0.2', dubboInvokeTimeout: 5 });
let stopping = false;
const out = { ok: 0, failed: 0, errors: [] };

const svc = dubbo.proxyService({
  dubboInterface: 'com.sofamesh.demo.EchoService',
  version: '1.0.0',
  methods: { echo: (word) => [{ $class: 'java.lang.String', $: word }] },
});

async function worker(id) {
  for (let i = 0; !stopping; i++) {
    const word = `${id}-${i}`;
    const { res, err } = await svc.echo(word);
    if (err) { out.failed++; if (out.errors.length < 5) out.errors.push(String(err.message || err)); }
    else if (typeof res === 'string' && res.includes(word)) out.ok++;
    else { out.failed++; if (out.errors.length < 5) out.errors.push(`unexpected ${JSON.stringify(res)}`); }
  }
}

process.stdin.on('end', () => { stopping = true; });
process.stdin.resume();
process.stdout.write('READY\n');
Promise.all(Array.from({ length: Number(concurrencyArg || 4) }, (_, id) => worker(id))).then(
  () => { process.stdout.write(JSON.stringify(out) + '\n', () => process.exit(0)); },
  (e) => { console.error(e); process.exit(2); },
);
