// A Dubbo 2 consumer on dubbo2.js DirectlyDubbo. Usage: node consumer.js HOST:PORT CALLS_JSON
// CALLS_JSON: [{"interface": I, "version": V, "group": G, "method": M, "args": [{"$class": .., "$": ..}],
//               "attachments": {K: V}, "repeat": N, "timeout_s": T, "after": MS}]
// (every call of every entry runs concurrently; DirectlyDubbo has no per-call attachments, so the
// encoder is wrapped to add them, keyed by interface, version, method and group)
// Prints one JSON line: [{"ok": bool, "res": value, "err": message, "ms": elapsed}, ...] in call order.
// With DUBBO_RESPONSE_ATTACHMENTS=1 each successful result also has "attachments": the response's
// attachments as dubbo2.js decodes them (flags 3-5; DirectlyDubbo drops them, so its decoder is wrapped).
'use strict';
const { DirectlyDubbo } = require('dubbo2.js');

const Encoder = require('dubbo2.js/es7/encode').default;

const [target, callsJson] = process.argv.slice(2);
const calls = JSON.parse(callsJson);

const extra = new Map();
for (const c of calls) {
  if (c.attachments) extra.set(`${c.interface}#${c.version || ''}#${c.method}#${c.group || ''}`, c.attachments);
}
const getAttachments = Encoder.prototype.getAttachments;
Encoder.prototype.getAttachments = function () {
  const ctx = this._ctx;
  const more = extra.get(`${ctx.dubboInterface}#${ctx.version || ''}#${ctx.methodName}#${ctx.group || ''}`);
  if (more) ctx.attachments = more;
  return getAttachments.call(this);
};
const withAttachments = process.env.DUBBO_RESPONSE_ATTACHMENTS === '1';
if (withAttachments) {
  const decoding = require('dubbo2.js/es7/decode');
  const decode = decoding.decode;
  decoding.decode = function decodeKeepingAttachments(bytes) {
    const out = decode.call(this, bytes);
    if (!out.err) out.res = { wrapped: true, res: out.res, attachments: out.attachments || {} };
    return out;
  };
}
const timeoutS = Math.max(1, ...calls.map((c) => c.timeout_s || 10));
const dubbo = DirectlyDubbo.from({ dubboAddress: target, dubboVersion: '2.0.2', dubboInvokeTimeout: timeoutS });

function toJson(v) {
  if (v === undefined) return null;
  if (Buffer.isBuffer(v)) return { bytes: v.toString('hex') };
  if (v && typeof v === 'object' && typeof v.toNumber === 'function') return v.toNumber(); // Long
  return v;
}

async function one(c) {
  // "after": start the call that many milliseconds after the others (later calls on the same connection)
  if (c.after) await new Promise((resolve) => setTimeout(resolve, c.after));
  const svc = dubbo.proxyService({
    dubboInterface: c.interface,
    version: c.version,
    group: c.group,
    timeout: c.timeout_ms,
    methods: { [c.method]: () => c.args || [] },
  });
  const t0 = Date.now();
  const { res, err } = await svc[c.method]();
  if (err) return { ok: false, res: null, err: String(err.message || err), ms: Date.now() - t0 };
  if (withAttachments && res && res.wrapped) {
    return { ok: true, res: toJson(res.res), err: null, ms: Date.now() - t0, attachments: res.attachments };
  }
  return { ok: true, res: toJson(res), err: null, ms: Date.now() - t0 };
}

const jobs = [];
for (const c of calls) for (let i = 0; i < (c.repeat || 1); i++) jobs.push(one(c));
Promise.all(jobs).then(
  (out) => { process.stdout.write(JSON.stringify(out) + '\n', () => process.exit(0)); },  // exit once written: a pipe takes 64 KiB at once
  (e) => { console.error(e); process.exit(2); },
);
