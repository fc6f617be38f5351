/** Moved to src/oidc/ (the client schema is the provider's); kept so existing imports still resolve. */
export { validateClientMetadata } from '../oidc/client-metadata.ts';
