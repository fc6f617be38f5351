import { hash, verify, type Algorithm } from '@node-rs/argon2';

/** OWASP Password Storage Cheat Sheet: argon2id, m=19 MiB, t=2, p=1. */
// Algorithm is a const enum (not importable under type stripping): 2 is Argon2id.
const PARAMS = { algorithm: 2 as Algorithm.Argon2id, memoryCost: 19456, timeCost: 2, parallelism: 1 } as const;

export const MAX_PASSWORD_LENGTH = 1024;

export function hashPassword(password: string): Promise<string> {
  return hash(password, PARAMS);
}

// Verified against when the account does not exist, so an unknown email costs the same time.
let dummyHash: Promise<string> | undefined;

export async function verifyPassword(stored: string | undefined, password: string): Promise<boolean> {
  const candidate = password.slice(0, MAX_PASSWORD_LENGTH);
  if (!stored) {
    dummyHash ??= hashPassword('latchkey-dummy-password');
    await verify(await dummyHash, candidate).catch(() => false);
    return false;
  }
  return verify(stored, candidate).catch(() => false);
}
