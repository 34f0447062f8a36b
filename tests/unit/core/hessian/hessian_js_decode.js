// Independent Hessian 2.0 decoder for the writer's property tests: npm hessian.js (DecoderV2), the
// deserializer dubbo2.js and @dubbo.ts use. Reads one JSON line {"hex": <a stream>, "count": n} per
// stdin line, decodes n values with their Java types and writes one JSON line {"values": [...]}.
// Each value is written as {"$class": C, "$": V} (hessian.js's typed form); besides plain JSON:
// {"$date": ms}, {"$bytes": hex}.
'use strict';
const hessian = require('hessian.js');
const readline = require('readline');

function plain(v) {
  if (v === null || v === undefined) return null;
  if (Buffer.isBuffer(v)) return { $bytes: v.toString('hex') };
  if (v instanceof Date) return { $date: v.getTime() };
  if (Array.isArray(v)) return v.map(plain);
  if (typeof v === 'object' && typeof v.toNumber === 'function') return { $long: v.toString() };
  if (typeof v === 'object') {
    const out = {};
    for (const [k, x] of Object.entries(v)) out[k] = k === '$class' ? x : plain(x);
    return out;
  }
  return v;
}

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  try {
    const req = JSON.parse(line);
    const dec = new hessian.DecoderV2(Buffer.from(req.hex, 'hex'));
    const values = [];
    for (let i = 0; i < req.count; i++) values.push(plain(dec.read(true)));
    process.stdout.write(JSON.stringify({ values, end: dec.byteBuffer.position() }) + '\n');
  } catch (e) {
    process.stdout.write(JSON.stringify({ error: String(e && e.stack || e) }) + '\n');
  }
});
