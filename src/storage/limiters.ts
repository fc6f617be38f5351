import { RateLimiterMemory, RateLimiterRedis, type RateLimiterAbstract, type RateLimiterStoreAbstract } from 'rate-limiter-flexible';
import { RedisStore } from './redis-store.ts';
import type { Store } from './store.ts';

/**
 * The rate-limit counters of lockouts and request limits (rate-limiter-flexible: one API over Redis and
 * memory). Which of the two is storage's choice, made here: in Redis (one server, a cluster or a
 * Sentinel-managed master — `RedisStore` is the same over all three) the counters are shared by every
 * node; with the embedded store they live in this process.
 */
export type Limiter = RateLimiterAbstract | RateLimiterStoreAbstract;

export interface LimiterOptions {
  /** Names the counters in storage (`lk:…`); one prefix per kind of limit. */
  keyPrefix: string;
  /** How many a key may spend per `duration`. */
  points: number;
  /** Seconds after a key's first point that its count starts over. */
  duration: number;
}

/** Memory limiters per store, so two users of one embedded store count together, as they do in Redis. */
const inMemory = new WeakMap<Store, Map<string, RateLimiterMemory>>();

export function createLimiter(store: Store, options: LimiterOptions): Limiter {
  if (store instanceof RedisStore) return new RateLimiterRedis({ storeClient: store.client, ...options });
  let limiters = inMemory.get(store);
  if (!limiters) inMemory.set(store, (limiters = new Map<string, RateLimiterMemory>()));
  const name = `${options.keyPrefix} ${options.points}/${options.duration}`;
  let limiter = limiters.get(name);
  if (!limiter) limiters.set(name, (limiter = new RateLimiterMemory(options)));
  return limiter;
}
