import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { loadConfig } from '../src/config.ts';
import { describeRedis } from '../src/storage/open.ts';
import { problems, SECRETS_KEY } from './helpers/config.ts';

/** The settings that name a Redis: REDIS_URL, REDIS_CLUSTER_NODES, REDIS_SENTINELS (+ name, password). */
describe('Redis Cluster and Sentinel settings', () => {
  test('host:port lists, with spaces, IPv6 in brackets', () => {
    const config = loadConfig({ REDIS_CLUSTER_NODES: 'redis-1:7000, 10.0.0.2:7001,[::1]:7002,' });
    assert.deepEqual(config.REDIS_CLUSTER_NODES, [
      { host: 'redis-1', port: 7000 },
      { host: '10.0.0.2', port: 7001 },
      { host: '::1', port: 7002 },
    ]);
    const sentinel = loadConfig({ REDIS_SENTINELS: 's1:26379,s2:26379', REDIS_SENTINEL_NAME: 'mymaster', REDIS_PASSWORD: 'hunter2' });
    assert.deepEqual(sentinel.REDIS_SENTINELS, [{ host: 's1', port: 26379 }, { host: 's2', port: 26379 }]);
    assert.equal(sentinel.REDIS_SENTINEL_NAME, 'mymaster');
    assert.equal(sentinel.REDIS_PASSWORD, 'hunter2');
    assert.equal(describeRedis(sentinel), 'the Redis master "mymaster" of the Sentinels at REDIS_SENTINELS');
    assert.equal(describeRedis(config), 'the Redis Cluster at REDIS_CLUSTER_NODES');
    assert.equal(describeRedis(loadConfig({})), undefined);
  });

  for (const value of ['redis-1', 'redis-1:', 'redis-1:0', 'redis-1:70000', ',', 'redis://redis-1:7000', 'a:1,b']) {
    test(`refuses REDIS_CLUSTER_NODES=${JSON.stringify(value)} with one line`, () => {
      const lines = problems({ REDIS_CLUSTER_NODES: value });
      assert.equal(lines.length, 1);
      assert.match(lines[0]!, /^REDIS_CLUSTER_NODES: must be host:port entries/);
    });
  }

  test('only one of REDIS_URL, REDIS_CLUSTER_NODES and REDIS_SENTINELS', () => {
    const two = problems({ REDIS_URL: 'redis://:hunter2@r:6379', REDIS_CLUSTER_NODES: 'n:7000' });
    assert.deepEqual(two.length, 1);
    assert.match(two[0]!, /^REDIS_CLUSTER_NODES: cannot be combined with REDIS_URL: set only one of/);
    const three = problems({ REDIS_URL: 'redis://r:6379', REDIS_CLUSTER_NODES: 'n:7000', REDIS_SENTINELS: 's:26379', REDIS_SENTINEL_NAME: 'm' });
    assert.deepEqual(three.length, 1);
    assert.match(three[0]!, /^REDIS_SENTINELS: cannot be combined with REDIS_URL or REDIS_CLUSTER_NODES/);
  });

  test('REDIS_SENTINEL_NAME goes with REDIS_SENTINELS, and only with it', () => {
    assert.match(problems({ REDIS_SENTINELS: 's:26379' })[0]!, /^REDIS_SENTINEL_NAME: is required with REDIS_SENTINELS/);
    assert.match(problems({ REDIS_SENTINEL_NAME: 'mymaster' })[0]!, /^REDIS_SENTINEL_NAME: is used only with REDIS_SENTINELS/);
    assert.match(problems({ REDIS_SENTINELS: 's:26379', REDIS_SENTINEL_NAME: 'my master' })[0]!, /^REDIS_SENTINEL_NAME: must be a Sentinel master name/);
  });

  test('REDIS_PASSWORD: needs a Redis, is not a second password for a URL, and is never echoed', () => {
    for (const env of [
      { REDIS_PASSWORD: 'hunter2-password' } as Record<string, string>,
      { REDIS_PASSWORD: 'hunter2-password', REDIS_URL: 'redis://:other@r:6379' },
    ]) {
      const lines = problems(env);
      assert.equal(lines.length, 1);
      assert.match(lines[0]!, /^REDIS_PASSWORD: /);
      assert.ok(!lines.join('\n').includes('hunter2'), lines[0]);
    }
    assert.equal(loadConfig({ REDIS_PASSWORD: 'hunter2', REDIS_URL: 'redis://r:6379' }).REDIS_PASSWORD, 'hunter2', 'a URL without a password takes it');
  });

  test('production takes any of the three as its Redis', () => {
    const base = { NODE_ENV: 'production', ISSUER: 'https://id.example.com', SECRETS_KEY };
    assert.doesNotThrow(() => loadConfig({ ...base, REDIS_URL: 'redis://r:6379' }));
    assert.doesNotThrow(() => loadConfig({ ...base, REDIS_CLUSTER_NODES: 'n1:7000,n2:7000' }));
    assert.doesNotThrow(() => loadConfig({ ...base, REDIS_SENTINELS: 's1:26379', REDIS_SENTINEL_NAME: 'mymaster' }));
    const lines = problems(base);
    assert.equal(lines.length, 1);
    assert.match(lines[0]!, /^REDIS_URL: is required in production, or REDIS_CLUSTER_NODES or REDIS_SENTINELS/);
  });
});
