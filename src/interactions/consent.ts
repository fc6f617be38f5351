import type { Context } from 'koa';
import { appAskedForConsent } from '../signin/consent.ts';
import { describeScopes } from '../signin/scope-words.ts';
import { stateOf } from '../signin/machine.ts';
import { formTargets } from '../oidc/provider.ts';
import type { Details, Flow } from './flow.ts';

type Client = NonNullable<Awaited<ReturnType<Flow['clientOf']>>>;

/** oidc-provider's consent prompt: the consent page, or nothing to ask (first party, allowed before). */
export function consentStep(flow: Flow) {
  return {
    async page(ctx: Context, d: Details, client: Client) {
      // Only the scopes not granted before are listed (docs/integrating-apps.md: asked again only for new scopes); none for
      // first-party clients. prompt=consent from the app shows the page to every client, with every scope asked for.
      const firstParty = client.first_party === true;
      const remembered = firstParty ? undefined : await flow.rememberedConsent(d);
      const ask = appAskedForConsent(d.params) ? flow.requestedScopes(d) : firstParty ? [] : flow.missingScopes(d).filter((s) => !remembered?.scopes.includes(s));
      if (ask.length === 0) return flow.apply(ctx, d, stateOf(d.prompt.name, undefined, false), { type: 'nothing-to-ask', via: firstParty ? 'first_party' : 'remembered' }, { ...(remembered ? { remembered } : {}) });
      const [account, items] = await Promise.all([flow.accounts.find(String(d.session?.accountId)), describeScopes(flow.registry, ask)]);
      flow.views.render(
        ctx,
        'consent',
        {
          uid: d.uid,
          csrf: flow.csrf.token(d.uid),
          title: 'Allow access',
          clientName: client.clientName ?? client.clientId,
          clientLogo: client.logoUri,
          email: account?.email,
          signedIn: true,
          items,
        },
        formTargets(d.params.redirect_uri),
      );
    },

    /** Allow, on the consent page or on a device's request (the same form action). */
    async allow(this: void, ctx: Context) {
      const { d, state } = await flow.at(ctx, 'consent-given');
      await flow.apply(ctx, d, state, { type: 'consent-given' });
    },

    /** "Not you? Use another account", on the second-factor and consent pages: this sign-in's sign-in page again. */
    async otherAccount(this: void, ctx: Context) {
      const { d, state } = await flow.at(ctx, 'other-account');
      await flow.apply(ctx, d, state, { type: 'other-account' });
    },

    /** Cancel or Deny, at any step. */
    async cancel(this: void, ctx: Context) {
      const { d, state } = await flow.at(ctx, 'cancel');
      await flow.apply(ctx, d, state, { type: 'cancel' });
    },
  };
}
