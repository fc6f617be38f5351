import { keys } from '../storage/keys.ts';
import type { Store } from '../storage/store.ts';

/**
 * The steps of a sign-in (the transitions between them: machine.ts), then oidc-provider's
 * consent prompt (our consent page, or nothing for first-party clients), then the redirect to the
 * client. `login` is the absence of a step record; "done" hands oidc-provider the login result
 * (policy.ts: `acr`, `amr`) and deletes the record.
 *
 * Where the state lives: one Store record per interaction (key from its uid, digested), expiring with
 * the interaction. oidc-provider's Interaction only persists its own fields, and `interactionResult`
 * is for finished steps. The record holds ids and the pending TOTP secret sealed by SecondFactor —
 * never a password or a secret in clear. The interaction itself is bound to the browser by
 * oidc-provider's interaction cookie, which every route checks first (interactionDetails).
 */
/** `upstream`: the step follows a sign-in through that upstream provider (no password was given). */
/** The account as the step that opened this one read it: what the next page shows and the finish needs, not read again. */
export interface KnownAccount {
  email: string;
  hasTotp: boolean;
  hasPasskey: boolean;
  /** The language its mail is written in ('en' when none was remembered). */
  locale: string;
}

export type SignInStep =
  | { name: 'second-factor'; accountId: string; subject: string; upstream?: string; known?: KnownAccount }
  /** `pending`: the TOTP enrolment the page offers (sealed), made when the page is first shown. */
  | { name: 'enroll'; accountId: string; subject: string; pending?: string; upstream?: string }
  /** `amr`: how the factor just set up signs this sign-in in, once the codes are saved. */
  | { name: 'recovery-codes'; accountId: string; subject: string; amr?: string[]; upstream?: string };

export class SignInSteps {
  readonly #store: Store;
  constructor(store: Store) {
    this.#store = store;
  }

  async get(uid: string): Promise<SignInStep | undefined> {
    const raw = await this.#store.get(keys.interactionStep(uid));
    return raw ? (JSON.parse(raw) as SignInStep) : undefined;
  }

  /** Moves the interaction to `step`; `expiresAt` is the interaction's `exp` (epoch seconds). */
  async set(uid: string, step: SignInStep, expiresAt: number): Promise<void> {
    const ttl = Math.max(1, Math.ceil(expiresAt - Date.now() / 1000));
    await this.#store.set(keys.interactionStep(uid), JSON.stringify(step), { ttl });
  }

  async clear(uid: string): Promise<void> {
    await this.#store.del(keys.interactionStep(uid));
  }
}
