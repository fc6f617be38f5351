import type { Context } from 'koa';
import type Provider from 'oidc-provider';
import type { Accounts } from '../accounts/accounts.ts';
import type { Csrf } from '../security/csrf.ts';
import { describeScopes, type ScopeDescriptions } from '../signin/scope-words.ts';
import type { Views } from '../views.ts';

type Details = Awaited<ReturnType<Provider['interactionDetails']>>;
type Client = NonNullable<Awaited<ReturnType<Provider['Client']['find']>>>;

interface DeviceCodeLike {
  userCode?: string;
  deviceInfo?: { ip?: string; ua?: string };
}

/**
 * The consent step of a device authorization (RFC 8628), shown every time (provider.ts `device_request`):
 * which app, on which device (the address and user agent that asked for the code), the code itself, and
 * every scope it asks for — with the §5.4 warning that a code sent by someone else must be denied.
 * Allow and Deny post to the ordinary consent routes.
 */
export async function renderDeviceRequest(
  ctx: Context,
  { provider, accounts, views, csrf, registry }: { provider: Provider; accounts: Accounts; views: Views; csrf: Csrf; registry: ScopeDescriptions },
  d: Details,
  client: Client,
) {
  const code = (await provider.DeviceCode.find(String(d.deviceCode), { ignoreExpiration: true })) as DeviceCodeLike | undefined;
  if (!code) throw Object.assign(new Error('this device code is gone; start again on your device'), { status: 400, expose: true });
  const account = await accounts.find(String(d.session?.accountId));
  const userCode = code.userCode ?? '';
  const scopes = (typeof d.params.scope === 'string' ? d.params.scope : '').split(' ').filter(Boolean);
  views.render(ctx, 'device-consent', {
    uid: d.uid,
    csrf: csrf.token(d.uid),
    title: 'Allow this device?',
    clientName: client.clientName ?? client.clientId,
    email: account?.email,
    items: await describeScopes(registry, scopes),
    device: { ip: code.deviceInfo?.ip, ua: code.deviceInfo?.ua },
    // Stored without its dash (oidc-provider normalizes it): shown as the device shows it.
    userCode: userCode.length === 8 ? `${userCode.slice(0, 4)}-${userCode.slice(4)}` : userCode,
  });
}
