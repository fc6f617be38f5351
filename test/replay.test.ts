import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { TestServer } from './helpers/server.ts';
import { useServer } from './helpers/world.ts';

let server: TestServer;
useServer({}, (setup) => ({ server } = setup));

test('a DPoP proof or client assertion is accepted once, even by parallel requests on several nodes', async () => {
  const { ReplayDetection } = server.app.provider as unknown as { ReplayDetection: { unique(iss: string, jti: string, exp: number): Promise<boolean> } };
  const exp = Math.floor(Date.now() / 1000) + 60;
  const results = await Promise.all(Array.from({ length: 20 }, () => ReplayDetection.unique('client-a', 'proof-1', exp)));
  assert.equal(results.filter(Boolean).length, 1);
  assert.equal(await ReplayDetection.unique('client-a', 'proof-2', exp), true, 'another proof is new');
  assert.equal(await ReplayDetection.unique('client-b', 'proof-1', exp), true, 'the same jti from another issuer is new');
});
