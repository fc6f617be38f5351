import type { Config } from '../config.ts';
import { MemoryStore } from './memory-store.ts';
import { connectRedis, RedisStore } from './redis-store.ts';
import type { Store } from './store.ts';

/** The store the configuration asks for: Redis when REDIS_URL is set, else the embedded store. */
export async function openStore(config: Pick<Config, 'REDIS_URL' | 'REDIS_TIMEOUT_MS'>): Promise<Store> {
  if (!config.REDIS_URL) return new MemoryStore();
  const store = new RedisStore(connectRedis(config.REDIS_URL, config.REDIS_TIMEOUT_MS));
  try {
    await store.ready(Math.max(5000, config.REDIS_TIMEOUT_MS));
  } catch (err) {
    await store.close();
    throw err;
  }
  return store;
}
