import assert from 'node:assert/strict';
import { ConfigError, loadConfig } from '../../src/config.ts';

/** A well-formed SECRETS_KEY for configurations under test. */
export const SECRETS_KEY = Buffer.alloc(32, 0x5a).toString('base64');

/** The problems loadConfig reports for an environment (fails the test when it accepts it). */
export function problems(env: Record<string, string>): string[] {
  try {
    loadConfig(env);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `threw ${String(err)}`);
    return err.problems;
  }
  assert.fail(`accepted ${JSON.stringify(env)}`);
}
