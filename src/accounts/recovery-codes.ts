import { createHmac, randomBytes } from 'node:crypto';

/**
 * Recovery codes: 10 single-use codes of 10 characters (50 random bits each), shown once.
 *
 * Stored only as HMAC-SHA-256 digests under a random per-account salt, not argon2id: argon2 exists
 * to slow guessing of low-entropy passwords, while a 50-bit random code cannot be guessed offline
 * at any hash speed that matters (and online guessing is capped by the lockout). A deterministic
 * digest also lets storage find and remove a code in one atomic step (a set member), so two parallel
 * uses of one code give one success — with a salted slow hash we would have to try every stored hash.
 */
export const RECOVERY_CODE_COUNT = 10;
const CODE_LENGTH = 10;
// Crockford's base32, lower case: no i, l, o, u, so what is read aloud or written down is unambiguous.
const ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz';

/** Fresh codes, written `xxxxx-xxxxx` for reading. */
export function generateRecoveryCodes(count = RECOVERY_CODE_COUNT): string[] {
  return Array.from({ length: count }, () => {
    // 256 is a multiple of 32: masking a random byte picks every character with the same chance.
    const chars = [...randomBytes(CODE_LENGTH)].map((b) => ALPHABET[b & 31]).join('');
    return `${chars.slice(0, 5)}-${chars.slice(5)}`;
  });
}

/** The canonical form of what a person typed (case, spaces, dashes and look-alikes forgiven), or undefined. */
export function normalizeRecoveryCode(input: string): string | undefined {
  const code = input
    .toLowerCase()
    .replace(/[\s-]/g, '')
    .replace(/[il]/g, '1')
    .replace(/o/g, '0');
  return code.length === CODE_LENGTH && [...code].every((c) => ALPHABET.includes(c)) ? code : undefined;
}

export function generateRecoverySalt(): string {
  return randomBytes(16).toString('base64url');
}

/** What is stored for a code: its salted digest. */
export function recoveryCodeDigest(salt: string, code: string): string {
  return createHmac('sha256', salt).update(code).digest('base64url');
}
