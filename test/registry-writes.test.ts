import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Registry, secretMatches } from '../src/oidc/registry.ts';
import { keys } from '../src/storage/keys.ts';
import { MemoryStore } from '../src/storage/memory-store.ts';
import type { Store } from '../src/storage/store.ts';
import { useRedisStore } from './helpers/redis.ts';

/**
 * Client changes under concurrency: `client update` and `client rotate-secret` at the same moment, from
 * two processes (one with a cached copy of the client), must both hold — a rotated-away secret must
 * never come back because an update wrote the record it had read before.
 */
const noValidation = async () => {};

function clientWrites(getStore: () => Store) {
  test('an update and a secret rotation at the same moment: both hold, every round', async () => {
    const store = getStore();
    const server = new Registry(store, { cache: true });
    const cli = new Registry(store);
    const { clientId, secret: first } = await cli.createClient({ name: 'Shop', grants: ['authorization_code'], redirectUris: ['https://shop.example/cb'], scope: 'openid' }, noValidation);
    // The server's cache now holds the client as it was; nothing tells it of the CLI's changes here.
    await server.findClient(clientId);
    let previous = first!;
    for (let round = 0; round < 8; round += 1) {
      const [secret] = await Promise.all([server.rotateSecret(clientId), cli.updateClient(clientId, { name: `Shop ${round}` }, noValidation)]);
      const stored = JSON.parse((await store.get(keys.client(clientId)))!) as { client_name: string; client_secret: string };
      assert.equal(stored.client_name, `Shop ${round}`, `round ${round}: the update holds`);
      assert.ok(secretMatches(stored.client_secret, secret), `round ${round}: the new secret holds`);
      assert.ok(!secretMatches(stored.client_secret, previous), `round ${round}: the old secret is gone`);
      previous = secret;
    }
  });

  test('an update from a process with a stale cache keeps a rotation made elsewhere', async () => {
    const store = getStore();
    const server = new Registry(store, { cache: true });
    const cli = new Registry(store);
    const { clientId } = await cli.createClient({ name: 'Billing', grants: ['authorization_code'], redirectUris: ['https://billing.example/cb'], scope: 'openid' }, noValidation);
    await server.findClient(clientId);
    const rotated = await cli.rotateSecret(clientId);
    await server.updateClient(clientId, { requireMfa: true }, noValidation);
    const stored = JSON.parse((await store.get(keys.client(clientId)))!) as { require_mfa?: boolean; client_secret: string };
    assert.equal(stored.require_mfa, true);
    assert.ok(secretMatches(stored.client_secret, rotated), 'the rotation made by the other process holds');
  });
}

describe('client writes on Redis', () => {
  let store: Store;
  useRedisStore((setup) => (store = setup.store));
  clientWrites(() => store);
});

describe('client writes on the embedded store', () => {
  const store = new MemoryStore();
  clientWrites(() => store);
});
