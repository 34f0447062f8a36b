// Independent Hessian 2.0 encoder for the property tests: npm hessian.js (EncoderV2), the
// serializer dubbo2.js and @dubbo.ts use. Reads one JSON array per stdin line, writes one JSON line
// {"hex": <all values encoded in one stream>, "ends": [offset after each value]}.
// Value forms besides plain JSON: {"$class": C, "$": V} (hessian.js java types), {"$date": ms},
// {"$bytes": hex}, {"$same": V, "n": k} (a list holding the SAME object k times -> references).
'use strict';
const hessian = require('hessian.js');
const readline = require('readline');

function revive(v) {
  if (Array.isArray(v)) return v.map(revive);
  if (v && typeof v === 'object') {
    if ('$date' in v) return new Date(v.$date);
    if ('$bytes' in v) return Buffer.from(v.$bytes, 'hex');
    if ('$same' in v) { const o = revive(v.$same); return Array.from({ length: v.n }, () => o); }
    const out = {};
    for (const [k, x] of Object.entries(v)) out[k] = k === '$class' ? x : revive(x);
    return out;
  }
  return v;
}

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  try {
    const enc = new hessian.EncoderV2();
    const ends = [];
    for (const v of JSON.parse(line)) { enc.write(revive(v)); ends.push(enc.byteBuffer._offset); }
    const hex = enc.byteBuffer._bytes.slice(0, enc.byteBuffer._offset).toString('hex');
    process.stdout.write(JSON.stringify({ hex, ends }) + '\n');
  } catch (e) {
    process.stdout.write(JSON.stringify({ error: String(e && e.stack || e) }) + '\n');
  }
});
