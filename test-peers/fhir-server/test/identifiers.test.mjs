import assert from 'node:assert/strict';
import { test } from 'node:test';
import { IdentifierIndex, parseTokenValues } from '../lib/identifiers.mjs';

test('token values: plain, system|value, |value, system|, OR and escapes', () => {
  assert.deepEqual(parseTokenValues('abc'), [{ system: undefined, value: 'abc' }]);
  assert.deepEqual(parseTokenValues('s|v'), [{ system: 's', value: 'v' }]);
  assert.deepEqual(parseTokenValues('|v'), [{ system: '', value: 'v' }]);
  assert.deepEqual(parseTokenValues('s|'), [{ system: 's', value: undefined }]);
  assert.deepEqual(parseTokenValues('a,s|b'), [
    { system: undefined, value: 'a' },
    { system: 's', value: 'b' },
  ]);
  assert.deepEqual(parseTokenValues('s|v\\|w\\,x|y'), [{ system: 's', value: 'v|w,x|y' }]);
  assert.deepEqual(parseTokenValues('https://x/y|p.d.hr.1'), [{ system: 'https://x/y', value: 'p.d.hr.1' }]);
});

test('token values without escapes parse as the escaped form does', () => {
  // The first `|` splits; later ones belong to the value, as in `s|v\|w` minus the escape.
  assert.deepEqual(parseTokenValues('s|v|w'), [{ system: 's', value: 'v|w' }]);
  assert.deepEqual(parseTokenValues('a,,s|'), [
    { system: undefined, value: 'a' },
    { system: undefined, value: '' },
    { system: 's', value: undefined },
  ]);
  const many = Array.from({ length: 50 }, (_, i) => `https://x/y|p.d.hr.${i}`).join(',');
  const parsed = parseTokenValues(many);
  assert.equal(parsed.length, 50);
  assert.deepEqual(parsed[49], { system: 'https://x/y', value: 'p.d.hr.49' });
  assert.deepEqual(parseTokenValues(many + '\\'), [...parsed.slice(0, 49), { system: 'https://x/y', value: 'p.d.hr.49\\' }]);
});

function sample(options) {
  const index = new IdentifierIndex(options);
  index.set('Device', 'a', [{ system: 'sys', value: 'dev-1' }]);
  index.set('Device', 'b', [{ system: 'other', value: 'dev-1' }]);
  index.set('Device', 'c', [{ value: 'dev-1' }]);
  index.set('Device', 'd', [{ system: 'sys', value: 'DEV-1' }]);
  index.set('Patient', 'a', [{ system: 'sys', value: 'dev-1' }]);
  return index;
}

const ids = (set) => [...set].sort();

test('exact semantics: value alone matches any system, system|value only that system', () => {
  const index = sample();
  assert.deepEqual(ids(index.lookup('Device', 'dev-1')), ['a', 'b', 'c']);
  assert.deepEqual(ids(index.lookup('Device', 'sys|dev-1')), ['a']);
  assert.deepEqual(ids(index.lookup('Device', '|dev-1')), ['c']);
  assert.deepEqual(ids(index.lookup('Device', 'sys|')), ['a', 'd']);
  assert.deepEqual(ids(index.lookup('Device', 'sys|dev-1,other|dev-1')), ['a', 'b']);
  assert.deepEqual(ids(index.lookup('Device', 'dev')), []);
  assert.deepEqual(ids(index.lookup('Device', 'SYS|dev-1')), []);
  assert.deepEqual(ids(index.lookup('Encounter', 'dev-1')), []);
});

test('updates and removals replace the old identifiers', () => {
  const index = sample();
  index.set('Device', 'a', [{ system: 'sys', value: 'dev-2' }]);
  assert.deepEqual(ids(index.lookup('Device', 'sys|dev-1')), []);
  assert.deepEqual(ids(index.lookup('Device', 'sys|dev-2')), ['a']);
  index.remove('Device', 'a');
  assert.deepEqual(ids(index.lookup('Device', 'sys|dev-2')), []);
  index.set('Device', 'single', { system: 'sys', value: 'one' });
  assert.deepEqual(ids(index.lookup('Device', 'one')), ['single']);
});

test('loose modes emulate case-insensitive and prefix-indexing servers', () => {
  const ci = sample({ caseInsensitive: true });
  assert.deepEqual(ids(ci.lookup('Device', 'SYS|Dev-1')), ['a', 'd']);
  const prefix = new IdentifierIndex({ maxLength: 4 });
  prefix.set('Observation', 'x', [{ system: 's', value: 'abcd-1' }]);
  prefix.set('Observation', 'y', [{ system: 's', value: 'abcd-2' }]);
  assert.deepEqual(ids(prefix.lookup('Observation', 's|abcd-1')), ['x', 'y']);
});
