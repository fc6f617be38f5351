import type { Context } from 'koa';
import Provider from 'oidc-provider';
import { StorageUnavailable } from '../storage/store.ts';
import { audit } from './audit.ts';
import { withoutRedaction, type Logger } from './logger.ts';
import { isProviderRequest, oidcRouteOf, routeOf, type Metrics } from './metrics.ts';

/**
 * oidc-provider reports through events; without listeners its errors (an `invalid_client`, a reused
 * refresh token) say nothing. Every `*.error` is logged with oidc-provider's `error_detail` — which
 * names what was wrong, never a secret — and counted; a few become audit events with a stable `event`.
 */
const ERROR_EVENTS = [
  'authorization.error',
  'backchannel.error',
  'challenge.error',
  'code_verification.error',
  'credential.error',
  'device_authorization.error',
  'device_resume.error',
  'discovery.error',
  'end_session.error',
  'end_session_confirm.error',
  'end_session_success.error',
  'grant.error',
  'introspection.error',
  'jwks.error',
  'pushed_authorization_request.error',
  'registration_create.error',
  'registration_delete.error',
  'registration_read.error',
  'registration_update.error',
  'revocation.error',
  'userinfo.error',
] as const;

interface OAuthError extends Error {
  error?: string;
  error_description?: string;
  error_detail?: string;
  status?: number;
}

/** oidc-provider's token models whose destruction at the revocation endpoint is a revocation, by event. */
/** The fields of a token model that name who it is for (never its value or its id). */
interface TokenModel {
  clientId?: string;
  accountId?: string;
}

/** The client a request authenticated as or named, by id only. */
function clientIdOf(ctx: Context): string | undefined {
  if (!isProviderRequest(ctx)) return undefined;
  return ctx.oidc?.client?.clientId ?? undefined;
}

/**
 * What a token response counts: the tokens-issued counter and one `token_issued` line. Called on
 * oidc-provider's `grant.success` and by the lean path (oidc/lean-path.ts) for the responses it answers.
 */
export function recordTokensIssued(logger: Logger, metrics: Metrics, ctx: Context, who: { clientId?: string; accountId?: string; grantType?: string }) {
  const grantType = who.grantType ?? ((isProviderRequest(ctx) ? ctx.oidc?.params?.grant_type : undefined) as string | undefined);
  recordTokenResponse(logger, metrics, { ...who, grantType, requestId: ctx.state?.requestId, body: ctx.body });
}

/** `recordTokensIssued` from what it needs of the request: the answer's body, the grant type as sent, the request id. */
export function recordTokenResponse(logger: Logger, metrics: Metrics, response: { requestId?: string; body: unknown; clientId?: string; accountId?: string; grantType?: string }) {
  const { grantType, tokens } = metrics.tokensInAnswer(response.grantType, response.body);
  const body = response.body as { scope?: unknown } | undefined;
  audit(withoutRedaction(logger), 'token_issued', {
    requestId: response.requestId,
    clientId: response.clientId,
    accountId: response.accountId,
    grantType,
    tokens,
    scope: typeof body?.scope === 'string' ? body.scope : undefined,
  }, 'tokens issued');
}

/**
 * A reused refresh token (its grant revoked): oidc-provider's `grant.error`, or the lean path's rotation
 * that found its token used by a parallel refresh (oidc/lean-path.ts; oidc-provider then answers the request).
 */
export function recordRefreshReuse(logger: Logger, metrics: Metrics, fields: { requestId?: string; route?: string; clientId?: string; [key: string]: unknown }) {
  metrics.refreshTokenReuse.inc();
  audit(logger, 'refresh_token_reuse_detected', { oidcEvent: 'grant.error', error: 'invalid_grant', error_detail: 'refresh token already used', ...fields }, 'refresh token reuse detected: grant revoked');
}

export function watchProvider(provider: Provider, logger: Logger, metrics: Metrics) {
  provider.on('server_error', (ctx: Context, err: Error) => {
    logger.error({ err, requestId: ctx.state?.requestId, route: routeOf(ctx) }, 'server_error');
  });

  // The hot path: one counter per token and one log line per response, nothing else.
  provider.on('grant.success', (ctx: Context) => {
    recordTokensIssued(logger, metrics, ctx, { clientId: clientIdOf(ctx), accountId: isProviderRequest(ctx) ? ctx.oidc?.entities?.Grant?.accountId : undefined });
  });

  // A token destroyed while the revocation endpoint answers is a revocation (the refresh grant also
  // destroys a reused refresh token: that is refresh_token_reuse_detected, not this). oidc-provider then
  // revokes the other tokens of an access or refresh token's grant (RFC 7009 §2.1).
  const revoked = (tokenKind: 'access_token' | 'refresh_token' | 'client_credentials') => (token: TokenModel) => {
    const ctx = Provider.ctx as Context | undefined;
    if (!ctx || oidcRouteOf(ctx) !== 'revocation') return;
    audit(logger, 'token_revoked', {
      requestId: ctx.state?.requestId,
      clientId: clientIdOf(ctx),
      tokenKind,
      tokenClientId: token.clientId,
      accountId: token.accountId,
      grantTokensRevoked: tokenKind !== 'client_credentials',
    }, 'token revoked');
  };
  provider.on('access_token.destroyed', revoked('access_token'));
  provider.on('refresh_token.destroyed', revoked('refresh_token'));
  provider.on('client_credentials.destroyed', revoked('client_credentials'));

  for (const event of ERROR_EVENTS) {
    // @types/oidc-provider's event map lacks some of these events (and takes one literal name per overload).
    (provider as unknown as { on(e: string, l: (ctx: Context, err: OAuthError) => void): void }).on(event, (ctx, err) => {
      const error = err?.error ?? 'unknown';
      metrics.oauthErrors.inc({ event, error: /^[a-z_]{1,40}$/.test(error) ? error : 'other' });
      const fields = {
        requestId: ctx?.state?.requestId,
        route: ctx ? routeOf(ctx) : undefined,
        oidcEvent: event,
        error,
        error_description: err?.error_description,
        error_detail: err?.error_detail,
        clientId: ctx ? clientIdOf(ctx) : undefined,
      };
      if (err instanceof StorageUnavailable) {
        // The outage itself is logged once (app.ts: storage_unavailable); each request only at debug level.
        logger.debug(fields, `${event}: storage unavailable`);
      } else if (error === 'invalid_client') {
        metrics.clientAuthFailures.inc({ route: fields.route ?? 'unknown' });
        // The source (client id as presented, at this address) is what the activity log aggregates by.
        audit(logger, 'client_authentication_failed', { ...fields, ip: ctx?.ip }, 'client authentication failed');
      } else if (event === 'grant.error' && error === 'invalid_grant' && /refresh token already used/.test(err?.error_detail ?? '')) {
        recordRefreshReuse(logger, metrics, fields);
      } else {
        logger.info(fields, event);
      }
    });
  }
}
