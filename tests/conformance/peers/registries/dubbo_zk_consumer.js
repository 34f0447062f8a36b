// A dubbo2.js consumer that finds its provider through its ZooKeeper registry (no address given).
// usage: node dubbo_zk_consumer.js ZK_HOST:PORT INTERFACE VERSION METHOD ARG
// Prints one JSON line: {"ok": bool, "res": value, "err": message, "providers": [host:port, ...]}.
'use strict';
const { Dubbo, java, setting } = require('dubbo2.js');

const [zk, dubboInterface, version, method, arg] = process.argv.slice(2);

async function main() {
  const dubbo = new Dubbo({
    application: { name: 'sofamesh-conformance' },
    register: zk,
    dubboSetting: setting.match([dubboInterface], { version }),
    service: {
      svc: (d) => d.proxyService({ dubboInterface, methods: { [method]: (s) => [java.String(s)] } }),
    },
  });
  await dubbo.ready();
  const { res, err } = await dubbo.service.svc[method](arg);
  const out = err ? { ok: false, res: null, err: String(err.message || err) } : { ok: true, res, err: null };
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(0);
}

setTimeout(() => { console.error('timed out'); process.exit(3); }, 30000).unref();
main().catch((err) => { console.error(err); process.exit(2); });
