// Quick load check against the test FHIR server, over keep-alive connections on 127.0.0.1.
//
//   node bench/load.mjs [--mode create|search|lookup] [--connections 16] [--seconds 10]
//                       [--preload N] [--batch 50] [--by value|system] [--no-validate]
//                       [--url URL --token T]
//
// create: PUT Observations with fresh ids (update-as-create, like the connector) as fast as the
//         connections allow.
// search: first PUT --preload Observations (default 2000), then GET Observation?identifier=
//         system|value for random stored ones (the connector's lookup before every write).
// lookup: first PUT --preload Observations, then POST Observation/_search with --batch new
//         identifiers per request (`identifier=a,b,…`, form body), as the connector's batched
//         lookup sends them: values alone (--by value, its default) or system|value.
// Without --url it starts its own server (--no-auth --quiet) and also reports the server's CPU
// time per request (Linux /proc), which stays meaningful when other processes share the cores.

import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    url: { type: 'string' },
    token: { type: 'string' },
    mode: { type: 'string', default: 'create' },
    connections: { type: 'string', default: '16' },
    seconds: { type: 'string', default: '10' },
    preload: { type: 'string', default: '2000' },
    batch: { type: 'string', default: '50' },
    by: { type: 'string', default: 'value' },
    'no-validate': { type: 'boolean', default: false },
  },
});
if (!['create', 'search', 'lookup'].includes(values.mode)) {
  throw new Error('--mode must be create, search or lookup');
}
if (values.by !== 'value' && values.by !== 'system') {
  throw new Error('--by must be value or system');
}

const SYSTEM = 'https://azure.microsoft.com/en-us/services/iomt-fhir-connector/';
let child;
let base = values.url;
if (!base) {
  const args = [new URL('../server.mjs', import.meta.url).pathname, '--no-auth', '--quiet'];
  if (values['no-validate']) {
    args.push('--no-validate');
  }
  child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  base = await new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (chunk) => {
      out += chunk;
      const m = /listening on (\S+)/.exec(out);
      if (m) {
        resolve(m[1]);
      }
    });
    child.on('exit', (code) => reject(new Error(`server exited with ${code}`)));
  });
}

const connections = Number(values.connections);
const seconds = Number(values.seconds);
const agent = new http.Agent({ keepAlive: true, maxSockets: connections });
const target = new URL(base);
const headers = { 'content-type': 'application/fhir+json' };
if (values.token) {
  headers.authorization = `Bearer ${values.token}`;
}
const run = `${process.pid}-${Date.now()}`;

function observation(i) {
  return {
    resourceType: 'Observation',
    id: `load-${run}-${i}`,
    status: 'final',
    identifier: [{ system: SYSTEM, value: `p.d.hr.${run}.${i}` }],
    code: { coding: [{ system: 'http://loinc.org', code: '8867-4', display: 'Heart rate' }] },
    subject: { reference: 'Patient/p' },
    device: { reference: 'Device/d' },
    effectivePeriod: { start: '2024-01-01T00:00:00.000Z', end: '2024-01-01T00:00:30.000Z' },
    issued: '2024-01-01T00:01:00.000Z',
    valueSampledData: { origin: { value: 0, unit: 'count/min' }, period: 1000, dimensions: 1, data: '61 62 63 E 64' },
  };
}

function request(method, path, body, contentType) {
  return new Promise((resolve, reject) => {
    const h = contentType ? { ...headers, 'content-type': contentType } : headers;
    const req = http.request(
      { agent, host: target.hostname, port: target.port, method, path: target.pathname.replace(/\/$/, '') + path, headers: h },
      (res) => {
        let size = 0;
        res.on('data', (chunk) => {
          size += chunk.length;
        });
        res.on('end', () => resolve({ status: res.statusCode, size }));
      }
    );
    req.on('error', reject);
    req.end(body);
  });
}

const put = (i) => request('PUT', `/Observation/load-${run}-${i}`, JSON.stringify(observation(i)));

let preloaded = 0;
if (values.mode === 'search' || values.mode === 'lookup') {
  const total = Number(values.preload);
  let next = 0;
  await Promise.all(
    Array.from({ length: connections }, async () => {
      while (next < total) {
        const { status } = await put(next++);
        if (status !== 201) {
          throw new Error(`preload PUT answered ${status}`);
        }
      }
    })
  );
  preloaded = total;
}

// CPU seconds the server process used so far (Linux /proc/<pid>/stat utime + stime).
function serverCpuSeconds() {
  if (!child) {
    return undefined;
  }
  const fields = readFileSync(`/proc/${child.pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

const batch = Number(values.batch);
let counter = 0;
let ok = 0;
let failed = 0;
const latencies = [];
const cpuBefore = serverCpuSeconds();
const start = performance.now();
const deadline = start + seconds * 1000;
async function worker() {
  while (performance.now() < deadline) {
    const t = performance.now();
    let good;
    if (values.mode === 'create') {
      good = (await put(preloaded + counter++)).status === 201;
    } else if (values.mode === 'lookup') {
      const tokens = [];
      for (let k = 0; k < batch; k++) {
        const value = `p.d.hr.${run}.new.${counter++}`;
        tokens.push(encodeURIComponent(values.by === 'system' ? `${SYSTEM}|${value}` : value));
      }
      const form = `identifier=${tokens.join('%2C')}&_count=${2 * batch}`;
      const { status } = await request('POST', '/Observation/_search', form, 'application/x-www-form-urlencoded');
      good = status === 200;
    } else {
      const i = Math.floor(Math.random() * preloaded);
      const query = encodeURIComponent(`${SYSTEM}|p.d.hr.${run}.${i}`);
      const { status, size } = await request('GET', `/Observation?identifier=${query}`);
      good = status === 200 && size > 600;
    }
    latencies.push(performance.now() - t);
    if (good) {
      ok++;
    } else {
      failed++;
    }
  }
}
await Promise.all(Array.from({ length: connections }, worker));
const elapsed = (performance.now() - start) / 1000;
const cpu = child ? serverCpuSeconds() - cpuBefore : undefined;
latencies.sort((a, b) => a - b);
const p = (q) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))].toFixed(1);
const what =
  values.mode === 'create'
    ? 'creates'
    : values.mode === 'lookup'
      ? `${batch}-identifier lookups (${values.by === 'system' ? 'system|value' : 'value'}) over ${preloaded} stored Observations`
      : `identifier searches over ${preloaded} stored Observations`;
let line =
  `${what}: ${ok} ok, ${failed} failed in ${elapsed.toFixed(1)} s = ${Math.round(ok / elapsed)}/s over ` +
  `${connections} connections (latency p50 ${p(0.5)} ms, p99 ${p(0.99)} ms)`;
if (cpu !== undefined) {
  const n = ok + failed;
  line += `; server CPU ${((cpu * 1e6) / Math.max(1, n)).toFixed(0)} µs/request = ${Math.round(n / cpu)} requests per server-CPU-second`;
}
console.log(line + (values['no-validate'] ? ' [--no-validate]' : ''));
agent.destroy();
child?.kill();
process.exit(failed > 0 ? 1 : 0);
