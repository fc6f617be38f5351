import assert from 'node:assert/strict';
import { test } from 'node:test';
import { WrittenInteractions } from '../src/storage/written-interactions.ts';

/**
 * What a sign-in page may be rendered from without reading Redis (storage/written-interactions.ts): only
 * the write its address names, while this process holds it, for at most ten minutes.
 */
test('a page renders from the write its address names, and only while that write is current', () => {
  let now = 1_000_000;
  const memory = new WrittenInteractions(() => now);
  const first = memory.remember('k', '{"step":1}', 3600);
  assert.equal(memory.read('k', first), '{"step":1}');
  assert.equal(memory.writeIdOf('k'), first);
  assert.equal(memory.read('k', 'guessed'), undefined, 'another id: read the store');
  assert.equal(memory.read('other', first), undefined, 'another interaction: read the store');
  const second = memory.remember('k', '{"step":2}', 3600);
  assert.notEqual(second, first);
  assert.equal(memory.read('k', first), undefined, 'an older write is never served');
  assert.equal(memory.read('k', second), '{"step":2}');
  // Kept for ten minutes at most, and never past the interaction's own TTL.
  now += 10 * 60_000;
  assert.equal(memory.read('k', second), undefined);
  assert.equal(memory.writeIdOf('k'), undefined);
  const short = memory.remember('s', '{}', 5);
  now += 5000;
  assert.equal(memory.read('s', short), undefined, 'expired with its interaction');
  // Taken or deleted: forgotten.
  const taken = memory.remember('t', '{}', 3600);
  memory.forget('t');
  assert.equal(memory.read('t', taken), undefined);
});

test('the memory is bounded: the oldest writes are forgotten first', () => {
  const memory = new WrittenInteractions(() => 0);
  const ids = Array.from({ length: 5001 }, (_, i) => memory.remember(`k${i}`, `${i}`, 3600));
  assert.equal(memory.read('k0', ids[0]!), undefined, 'the oldest went');
  assert.equal(memory.read('k1', ids[1]!), '1');
  assert.equal(memory.read('k5000', ids[5000]!), '5000');
});
