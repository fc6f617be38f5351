import type { Cluster, Redis } from 'ioredis';
import type { Config } from '../config.ts';
import { MemoryStore } from './memory-store.ts';
import { connectCluster, connectRedis, connectSentinel, RedisStore } from './redis-store.ts';
import type { Store } from './store.ts';

/** The settings that say where Redis is: one of REDIS_URL, REDIS_CLUSTER_NODES, REDIS_SENTINELS (config.ts). */
export type RedisConfig = Pick<Config, 'REDIS_URL' | 'REDIS_TIMEOUT_MS'> &
  Partial<Pick<Config, 'REDIS_CLUSTER_NODES' | 'REDIS_SENTINELS' | 'REDIS_SENTINEL_NAME' | 'REDIS_PASSWORD'>>;

/** A client of the Redis the configuration names — one server, a Cluster or a Sentinel-managed master — or undefined when none is. */
export function connectConfiguredRedis(config: RedisConfig): Redis | Cluster | undefined {
  const { REDIS_TIMEOUT_MS: timeoutMs, REDIS_PASSWORD: password } = config;
  if (config.REDIS_URL) return connectRedis(config.REDIS_URL, timeoutMs, password);
  if (config.REDIS_CLUSTER_NODES) return connectCluster(config.REDIS_CLUSTER_NODES, timeoutMs, password);
  if (config.REDIS_SENTINELS && config.REDIS_SENTINEL_NAME) return connectSentinel(config.REDIS_SENTINELS, config.REDIS_SENTINEL_NAME, timeoutMs, password);
  return undefined;
}

/** Which Redis the configuration names, for log lines and errors: variable names, never a password. */
export function describeRedis(config: RedisConfig): string | undefined {
  if (config.REDIS_URL) return 'Redis at REDIS_URL';
  if (config.REDIS_CLUSTER_NODES) return 'the Redis Cluster at REDIS_CLUSTER_NODES';
  if (config.REDIS_SENTINELS) return `the Redis master "${config.REDIS_SENTINEL_NAME}" of the Sentinels at REDIS_SENTINELS`;
  return undefined;
}

/** The store the configuration asks for: Redis when one is configured, else the embedded store. */
export async function openStore(config: RedisConfig): Promise<Store> {
  const client = connectConfiguredRedis(config);
  if (!client) return new MemoryStore();
  const store = new RedisStore(client);
  try {
    await store.ready(Math.max(5000, config.REDIS_TIMEOUT_MS));
  } catch (err) {
    await store.close();
    throw err;
  }
  return store;
}
