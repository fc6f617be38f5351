import { DEVICE_CODE_GRANT, RegistryError, type ClientInput, type Registry } from '../oidc/registry.ts';

/**
 * The `latchkey` CLI's own client (`latchkey login --server URL`, src/cli/login.ts): a first-party public
 * client with the device authorization grant (RFC 8628), as `gh auth login` has one. Its id is fixed and
 * public, like gh's: the CLI then needs no request and no credential to learn it, and it is the same on
 * every server and after every restart of an embedded store. Knowing it grants nothing: every device
 * request is shown to a person, who must sign in with a second factor (`require_mfa`) and allow it, and
 * the admin API then still wants an admin account.
 */
export const CLI_CLIENT_ID = 'latchkey-cli';
/** The admin API, and a refresh token so that a login lasts longer than one 15-minute access token. */
export const CLI_SCOPE = 'openid offline_access latchkey:admin';
/** Parallel commands may refresh the same token at once: the repeat gets the same answer instead of revoking the login. */
const CLI_REFRESH_GRACE_SECONDS = 10;

/** Registers the CLI's client when absent or registered differently (after ensureAdminApi: it claims the admin scope). */
export async function ensureCliClient(registry: Registry): Promise<void> {
  const existing = await registry.findClient(CLI_CLIENT_ID);
  const grants: ClientInput['grants'] = [DEVICE_CODE_GRANT, 'refresh_token'];
  if (existing && existing.scope === CLI_SCOPE && JSON.stringify(existing.grant_types) === JSON.stringify(grants) && existing.require_mfa === true && existing.refresh_grace_seconds === CLI_REFRESH_GRACE_SECONDS) return;
  if (existing) await registry.deleteClient(CLI_CLIENT_ID).catch(() => {});
  try {
    await registry.createClient(
      { name: 'Latchkey CLI', grants, scope: CLI_SCOPE, public: true, firstParty: true, requireMfa: true, refreshGrace: CLI_REFRESH_GRACE_SECONDS },
      async () => {},
      { clientId: CLI_CLIENT_ID },
    );
  } catch (err) {
    // Another node registered it at the same moment: the same record.
    if (!(err instanceof RegistryError)) throw err;
  }
}
