import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseConfig } from '../lib/config.mjs';

test('defaults and repeatable flags', () => {
  const c = parseConfig(['--client', 'a:s:with:colons', '--client', 'b:t', '--page-size', '2', '--base-path', '/fhir/']);
  assert.equal(c.port, 0);
  assert.equal(c.host, '127.0.0.1');
  assert.deepEqual([...c.clients], [
    ['a', 's:with:colons'],
    ['b', 't'],
  ]);
  assert.equal(c.pageSize, 2);
  assert.equal(c.basePath, '/fhir');
  assert.equal(c.tokenTtl, 3600);
  assert.equal(c.validate, true);
});

test('only loopback hosts', () => {
  assert.throws(() => parseConfig(['--no-auth', '--host', '0.0.0.0']), /not a loopback address/);
  assert.equal(parseConfig(['--no-auth', '--host', '::1']).host, '::1');
  assert.equal(parseConfig(['--no-auth', '--host', 'localhost']).host, '127.0.0.1');
});

test('mistakes are named', () => {
  assert.throws(() => parseConfig([]), /no credentials configured/);
  assert.throws(() => parseConfig(['--no-auth', '--port', 'x']), /--port must be a whole number/);
  assert.throws(() => parseConfig(['--no-auth', '--token-ttl', '0']), /--token-ttl must be between 1/);
  assert.throws(() => parseConfig(['--client', 'nosecret']), /--client must look like ID:SECRET/);
  assert.throws(() => parseConfig(['--no-auth', '--bogus']), /unknown option/i);
  assert.throws(() => parseConfig(['--no-auth', '--identifier-match', 'fuzzy']), /exact or case-insensitive/);
});
