import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { Accounts, type Account } from '../src/accounts/accounts.ts';
import { keys } from '../src/storage/keys.ts';
import { MemoryStore } from '../src/storage/memory-store.ts';
import type { Store } from '../src/storage/store.ts';
import { useRedisStore } from './helpers/redis.ts';

/**
 * Account writes under concurrency: an operator's change and a person's change at the same moment
 * must both hold (a password change used to rewrite the whole record read before its argon2 work).
 */
function accountContract(getStore: () => Store) {
  const accounts = () => new Accounts(getStore());
  const fresh = () => accounts().create({ email: `race-${Math.random().toString(36).slice(2)}@example.org`, password: 'the first passphrase' });

  test('a password change and a disable at the same moment: both hold, every round', async () => {
    const a = accounts();
    for (let round = 0; round < 8; round += 1) {
      const account = await fresh();
      const password = `passphrase of round ${round}`;
      await Promise.all([a.setPassword(account.id, password), a.setDisabled(account.id, true)]);
      const stored = (await a.find(account.id))!;
      assert.equal(stored.disabled, true, `round ${round}: the disable was not undone`);
      assert.notEqual(stored.passwordHash, account.passwordHash, `round ${round}: the password changed`);
      await a.setDisabled(account.id, false);
      assert.ok(await a.authenticate(account.email, password), `round ${round}: the new password works`);
    }
  });

  test('many concurrent changes of different fields all land', async () => {
    const a = accounts();
    const account = await fresh();
    await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        a.update(account.id, (x) => {
          x.name = `${x.name ?? ''}${i}`;
        }),
      ),
    );
    assert.equal([...(await a.find(account.id))!.name!].sort().join(''), '0123456789');
  });

  test('a password change racing a delete does not bring the account back', async () => {
    const a = accounts();
    for (let round = 0; round < 4; round += 1) {
      const account = await fresh();
      const [changed] = await Promise.allSettled([a.setPassword(account.id, 'a passphrase too late'), a.delete(account.id)]);
      if (changed.status === 'rejected') assert.match(String(changed.reason), /no account/);
      assert.equal(await getStore().get(keys.account(account.id)), null, `round ${round}`);
    }
  });

  test('an update from the record as the caller read it: applied on what is stored now when that changed since', async () => {
    const a = accounts();
    const account = await fresh();
    const asRead = (await a.find(account.id))!;
    await a.setDisabled(account.id, true);
    await a.update(account.id, (x) => void (x.name = 'Ada'), asRead);
    assert.deepEqual({ name: (await a.find(account.id))!.name, disabled: (await a.find(account.id))!.disabled }, { name: 'Ada', disabled: true }, 'the disable made in between holds');
    const current = (await a.find(account.id))!;
    await a.update(account.id, (x) => void (x.name = 'Ada L.'), current);
    assert.equal((await a.find(account.id))!.name, 'Ada L.');
    await a.update(account.id, (x) => void (x.name = 'Ada Lovelace'), { ...current, id: crypto.randomUUID(), email: 'someone@example.org' });
    assert.deepEqual({ ...(await a.find(account.id))! }, { ...current, name: 'Ada Lovelace' }, "another account's record is never taken for this one");
  });

  test('an account stored as a JSON string by an earlier version is updated in place, concurrently too', async () => {
    const store = getStore();
    const legacy: Account = { id: crypto.randomUUID(), email: 'legacy@example.org', passwordHash: (await fresh()).passwordHash, disabled: false, createdAt: 1 };
    await store.set(keys.account(legacy.id), JSON.stringify(legacy));
    const a = accounts();
    assert.deepEqual(await a.find(legacy.id), legacy);
    await Promise.all([a.setPassword(legacy.id, 'a new passphrase'), a.setDisabled(legacy.id, true)]);
    const stored = JSON.parse((await store.get(keys.account(legacy.id)))!) as Account;
    assert.deepEqual({ ...stored, passwordHash: '' }, { ...legacy, passwordHash: '', disabled: true });
    assert.notEqual(stored.passwordHash, legacy.passwordHash);
  });
}

describe('Accounts on Redis', () => {
  let store: Store;
  useRedisStore((setup) => ({ store } = setup));
  accountContract(() => store);
});

describe('Accounts on the embedded store', () => {
  const store = new MemoryStore();
  after(() => store.close());
  accountContract(() => store);
});
