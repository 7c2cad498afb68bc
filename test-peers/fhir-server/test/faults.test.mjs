import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FaultInjector, mulberry32, parseFaultConfig } from '../lib/faults.mjs';

const put = { method: 'PUT', resourceType: 'Observation', ifMatch: false, token: false };

test('seeded generators repeat', () => {
  const a = mulberry32(42);
  const b = mulberry32(42);
  for (let i = 0; i < 100; i++) {
    const x = a();
    assert.equal(x, b());
    assert.ok(x >= 0 && x < 1);
  }
});

test('seeded faults are deterministic and roughly at the configured rates', () => {
  const run = () => {
    const f = new FaultInjector();
    f.set(parseFaultConfig({ rate429: 0.2, rate503: 0.1, dropRate: 0.05, retryAfter: 1, seed: 42 }));
    return Array.from({ length: 2000 }, () => {
      const d = f.decide(put);
      return d ? (d.kind === 'status' ? d.status : d.kind) : 'ok';
    });
  };
  const first = run();
  assert.deepEqual(first, run());
  const count = (k) => first.filter((x) => x === k).length / first.length;
  assert.ok(Math.abs(count(429) - 0.2) < 0.04, `429 rate ${count(429)}`);
  assert.ok(Math.abs(count(503) - 0.1) < 0.03, `503 rate ${count(503)}`);
  assert.ok(Math.abs(count('drop') - 0.05) < 0.02, `drop rate ${count('drop')}`);
});

test('412 only hits conditional requests', () => {
  const f = new FaultInjector();
  f.set(parseFaultConfig({ rate412: 1 }));
  assert.equal(f.decide(put), null);
  assert.deepEqual(f.decide({ ...put, ifMatch: true }), { kind: 'status', status: 412 });
});

test('script entries come first, then rates; filters select requests', () => {
  const f = new FaultInjector();
  f.set(parseFaultConfig({ script: [503, 'drop', 'pass', '429'], retryAfter: 2, resourceTypes: ['Observation'] }));
  assert.equal(f.decide({ ...put, resourceType: 'Device' }), null);
  assert.deepEqual(f.decide(put), { kind: 'status', status: 503, retryAfter: 2 });
  assert.deepEqual(f.decide(put), { kind: 'drop' });
  assert.equal(f.decide(put), null);
  assert.deepEqual(f.decide(put), { kind: 'status', status: 429, retryAfter: 2 });
  assert.equal(f.decide(put), null);
  assert.equal(f.decide({ ...put, token: true }), null);
});

test('bad configurations say what to fix', () => {
  assert.throws(() => parseFaultConfig({ rate429: 2 }), /rate429 must be a number between 0 and 1/);
  assert.throws(() => parseFaultConfig({ rate429: 0.6, rate503: 0.6 }), /must not exceed 1/);
  assert.throws(() => parseFaultConfig({ rate42: 0.1 }), /unknown fault key "rate42"/);
  assert.throws(() => parseFaultConfig({ script: [200] }), /script entry 200/);
  assert.throws(() => parseFaultConfig([]), /JSON object/);
});
