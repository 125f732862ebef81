// peer_node_single.js: N sequential users.createOrUpdate calls with node-zendesk, each with a
// distinct email, against the stand-in (endpointUri points the client at it; node's default
// agent keeps the connection alive). Users are built before the clock starts.
//   NODE_PATH=build/bench/node/node_modules node bench/peer_node_single.js URL N [PREFIX]
'use strict';
const zendesk = require('node-zendesk');

async function main() {
  const [url, nArg, prefix = 'node'] = process.argv.slice(2);
  const n = Number(nArg);
  if (!url || !(n > 0)) {
    process.stderr.write('usage: peer_node_single.js URL N [PREFIX]\n');
    process.exit(2);
  }
  const client = zendesk.createClient({
    username: 'admin@example.com',
    token: 'stand-in-token',
    endpointUri: `${url}/api/v2`,
  });
  const users = [];
  for (let i = 1; i <= n; i++) users.push({ user: { email: `${prefix}-${i}@example.com`, name: `Bench User ${i}` } });
  let failed = 0;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    try {
      const { result } = await client.users.createOrUpdate(users[i]);
      if (!result || !result.id) throw new Error('no user in the answer');
    } catch (e) {
      if (failed++ === 0) process.stderr.write(`peer_node_single: request ${i + 1}: ${e.message}\n`);
    }
  }
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  process.stdout.write(`requests ${n} seconds ${s.toFixed(6)} rps ${(n / s).toFixed(1)} failed ${failed}\n`);
  process.exit(failed ? 1 : 0);
}
main();
