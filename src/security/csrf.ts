import { createHmac, createSecretKey, timingSafeEqual, type KeyObject } from 'node:crypto';

/**
 * CSRF tokens for our forms: an HMAC of the interaction's uid under a server secret. The interaction
 * itself is bound to the browser's interaction cookie, so a page from another site can neither read
 * the token nor reuse one from its own interaction.
 */
export class Csrf {
  readonly #secret: KeyObject;
  constructor(secret: string) {
    this.#secret = createSecretKey(Buffer.from(secret));
  }

  token(scope: string): string {
    return createHmac('sha256', this.#secret).update(`csrf:${scope}`).digest('base64url');
  }

  verify(scope: string, presented: unknown): boolean {
    if (typeof presented !== 'string') return false;
    const expected = Buffer.from(this.token(scope));
    const actual = Buffer.from(presented);
    return expected.length === actual.length && timingSafeEqual(expected, actual);
  }
}
