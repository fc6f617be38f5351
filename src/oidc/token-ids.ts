import type Provider from 'oidc-provider';
import { GRANT_BOUND_MODELS, grantTag } from '../storage/keys.ts';

/**
 * Gives every grant-bound opaque token an id that starts with its grant's tag. The storage key of a
 * token is derived from its id alone (oidc-provider looks tokens up by value), and the tag puts all
 * records of one grant in one Redis Cluster slot, so revoking or consuming stays one atomic script.
 * The random part is unchanged (oidc-provider's 256 bits).
 */
export function tagTokenIdsWithGrant(provider: Provider): void {
  const models = provider as unknown as Record<string, { prototype: { generateTokenId(): string; grantId?: string; format?: string } }>;
  for (const name of GRANT_BOUND_MODELS) {
    const Model = models[name];
    if (!Model) continue;
    const original = Model.prototype.generateTokenId;
    Model.prototype.generateTokenId = function generateTokenId() {
      const id = original.call(this);
      // JWT access tokens are not stored; their jti is not a storage key.
      return this.grantId && this.format !== 'jwt' ? `${grantTag(this.grantId)}${id}` : id;
    };
  }
}
