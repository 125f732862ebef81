// peer_node_bulk.js: the bulk peer of zendesk-sync. Streams the CSV that bench/gen_users.lua
// writes, maps each row to a user as zendesk-sync does (organization -> {name}, tags split on
// ';', user_fields.* columns, integer employee numbers), and sends chunks of 100 with node-zendesk's
// users.createOrUpdateMany, following each job with node-zendesk's own poller
// (jobstatuses.watch). At most MAX_JOBS jobs are in flight (30, zendesk-sync's default) and
// watch polls every POLL_MS (250 ms, zendesk-sync's shortest poll interval).
//   NODE_PATH=build/bench/node/node_modules node bench/peer_node_bulk.js URL users.csv
'use strict';
const fs = require('node:fs');
const readline = require('node:readline');
const zendesk = require('node-zendesk');

const MAX_JOBS = Number(process.env.MAX_JOBS || 30);
const POLL_MS = Number(process.env.POLL_MS || 250);
const CHUNK = 100;

function toUser(header, fields) {
  const user = {};
  header.forEach((h, i) => {
    const v = fields[i];
    if (v === undefined || v === '') return;
    if (h === 'organization') user.organization = { name: v };
    else if (h === 'tags') user.tags = v.split(';').filter((t) => t !== '');
    else if (h.startsWith('user_fields.')) {
      user.user_fields = user.user_fields || {};
      const k = h.slice('user_fields.'.length);
      user.user_fields[k] = /^-?\d+$/.test(v) ? Number(v) : v;
    } else user[h] = v;
  });
  return user;
}

async function main() {
  const [url, file] = process.argv.slice(2);
  if (!url || !file) {
    process.stderr.write('usage: peer_node_bulk.js URL users.csv\n');
    process.exit(2);
  }
  const client = zendesk.createClient({
    username: 'admin@example.com',
    token: 'stand-in-token',
    endpointUri: `${url}/api/v2`,
  });
  const counts = { Created: 0, Updated: 0, Failed: 0, other: 0 };
  let rows = 0;
  let jobsFailed = 0;
  const inflight = new Set();

  async function runJob(users) {
    const { result } = await client.users.createOrUpdateMany({ users });
    const job = result.job_status || result;
    const done = await client.jobstatuses.watch(job.id, POLL_MS, 5);
    if (done.status !== 'completed') jobsFailed++;
    for (const r of done.results || []) {
      if (counts[r.status] !== undefined) counts[r.status]++;
      else counts.other++;
    }
  }
  function submit(users) {
    const p = runJob(users).catch((e) => {
      jobsFailed++;
      if (jobsFailed === 1) process.stderr.write(`peer_node_bulk: ${e.message}\n`);
    }).finally(() => inflight.delete(p));
    inflight.add(p);
  }

  const t0 = process.hrtime.bigint();
  const rl = readline.createInterface({ input: fs.createReadStream(file), crlfDelay: Infinity });
  let header = null;
  let chunk = [];
  for await (const line of rl) {
    if (line === '') continue;
    const fields = line.split(',');
    if (!header) {
      header = fields;
      continue;
    }
    rows++;
    chunk.push(toUser(header, fields));
    if (chunk.length === CHUNK) {
      submit(chunk);
      chunk = [];
      while (inflight.size >= MAX_JOBS) await Promise.race(inflight);
    }
  }
  if (chunk.length > 0) submit(chunk);
  await Promise.all(inflight);
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  process.stdout.write(`rows ${rows} seconds ${s.toFixed(3)} users_per_s ${(rows / s).toFixed(1)} ` +
    `created ${counts.Created} updated ${counts.Updated} failed ${counts.Failed} jobs_failed ${jobsFailed}\n`);
  process.exit(jobsFailed || counts.Failed ? 1 : 0);
}
main();
