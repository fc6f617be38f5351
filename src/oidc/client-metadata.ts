import type { ClientMetadata } from 'oidc-provider';
import { OIDC_SCOPES, RegistryError } from './registry.ts';
import { generateKeyGeneration } from './signing-keys.ts';

/**
 * Checks a new client's metadata with oidc-provider's own schema, so that no front ever saves a
 * client the server would refuse to load. A throwaway provider is configured like src/oidc/provider.ts
 * in everything the client schema looks at, and sees the client in the same shape as the server does
 * (providerClientMetadata: API scopes moved to `api_scopes`; the registry checked that APIs own them).
 * Loaded on demand, so that other commands do not pay for loading oidc-provider.
 */
export async function validateClientMetadata(metadata: ClientMetadata): Promise<void> {
  const [{ default: Provider }, { providerClientMetadata, CLIENT_PROPERTIES }] = await Promise.all([import('oidc-provider'), import('./provider.ts')]);
  const algs = ['RS256', 'ES256', 'EdDSA'];
  const provider = new Provider('http://localhost', {
    // Given so that oidc-provider does not warn about its development adapter and keys on stderr.
    adapter: class NoStorage {} as never,
    jwks: { keys: generateKeyGeneration().map(({ iat: _iat, ...jwk }) => jwk) },
    scopes: [...OIDC_SCOPES],
    responseTypes: ['code'],
    clientAuthMethods: ['client_secret_basic', 'client_secret_post', 'none'],
    enabledJWA: {
      idTokenSigningAlgValues: algs as never,
      userinfoSigningAlgValues: algs as never,
      introspectionSigningAlgValues: algs as never,
      authorizationSigningAlgValues: algs as never,
    },
    extraClientMetadata: { properties: CLIENT_PROPERTIES },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      rpInitiatedLogout: { enabled: true },
      backchannelLogout: { enabled: true },
      deviceFlow: { enabled: true },
    },
  });
  try {
    await provider.Client.validate(providerClientMetadata(metadata)!);
  } catch (err) {
    const description = (err as { error_description?: unknown }).error_description;
    if (typeof description === 'string') throw new RegistryError('client_metadata_invalid', { params: { description } });
    throw err;
  }
}
