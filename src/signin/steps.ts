import { keys } from '../storage/keys.ts';
import { ANSWERED_INTERACTION, interactionReads } from '../storage/oidc-adapter.ts';
import type { Store } from '../storage/store.ts';
import { writtenInteractions } from '../storage/written-interactions.ts';

/**
 * The steps of a sign-in (the transitions between them: machine.ts), then oidc-provider's
 * consent prompt (our consent page, or nothing for first-party clients), then the redirect to the
 * client. `login` is the absence of a step record; "done" hands oidc-provider the login result
 * (policy.ts: `acr`, `amr`), whose save drops the step.
 *
 * Where the state lives: in the interaction's own record (a field oidc-provider does not know), so
 * every request that loads the interaction has its step with it; it expires with the interaction.
 * `interactionResult` is for finished steps. The step holds ids and the pending TOTP secret sealed
 * by SecondFactor — never a password or a secret in clear. The interaction itself is bound to the browser by
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

/** Interactions whose step's account this process remembers: a bounded memory (the oldest go first). */
const MAX_REMEMBERED_STEPS = 10_000;

export class SignInSteps {
  readonly #store: Store;
  /**
   * Interaction uid → the keys of the person its step named when this process last read or wrote it (their
   * account record, last TOTP step, and consent to the interaction's app): a guess for the next step's
   * read-ahead (`readAhead`), never an answer. Another process may have moved the step since; a read ahead
   * of the wrong person is simply not taken (read-ahead.ts serves a key's own answer only).
   */
  readonly #personKeys = new Map<string, string[]>();

  constructor(store: Store) {
    this.#store = store;
  }

  /** The interaction's record as stored: as this request read it already, else from the store. */
  async #record(uid: string): Promise<{ key: string; record?: Record<string, unknown> }> {
    const key = keys.model('Interaction', uid);
    const raw = interactionReads.getStore()?.get(key) ?? (await this.#store.getModel(key, { consumable: false }))?.payload;
    // An interaction its resume took leaves a mark (ANSWERED_INTERACTION), which is no interaction.
    return { key, ...(raw && raw !== ANSWERED_INTERACTION ? { record: JSON.parse(raw) as Record<string, unknown> } : {}) };
  }

  async get(uid: string): Promise<SignInStep | undefined> {
    const { record } = await this.#record(uid);
    const step = record?.[STEP_FIELD] as SignInStep | undefined;
    this.#remember(uid, step, record);
    return step;
  }

  /**
   * Sends the reads a step's post needs first, together (Store.readAhead): the interaction, the account
   * its step named when this process last saw it, that person's last TOTP step (accounts/totp.ts) and
   * consent to the app (which a post that finishes the sign-in hands to the resume, signin/consent.ts),
   * and `more` (keys the post names itself).
   */
  readAhead(uid: string, more: string[] = []): void {
    this.#store.readAhead([keys.model('Interaction', uid), ...(this.#personKeys.get(uid) ?? []), ...more]);
  }

  #remember(uid: string, step: SignInStep | undefined, record: Record<string, unknown> | undefined): void {
    this.#personKeys.delete(uid);
    if (!step) return;
    if (this.#personKeys.size >= MAX_REMEMBERED_STEPS) this.#personKeys.delete(this.#personKeys.keys().next().value!);
    const clientId = (record?.params as { client_id?: unknown } | undefined)?.client_id;
    this.#personKeys.set(uid, [keys.account(step.accountId), keys.totpLastStep(step.accountId), ...(typeof clientId === 'string' ? [keys.consent(step.accountId, clientId)] : [])]);
  }

  /** Moves the interaction to `step` (undefined: back to the password); `expiresAt` is the interaction's `exp` (epoch seconds). */
  async set(uid: string, step: SignInStep | undefined, expiresAt: number): Promise<void> {
    const { key, record } = await this.#record(uid);
    // The interaction is gone (used or expired): so is its step, and the next request says so.
    if (!record) return this.#remember(uid, undefined, undefined);
    this.#remember(uid, step, record);
    const { [STEP_FIELD]: _previous, ...rest } = record;
    const raw = JSON.stringify(step ? { ...rest, [STEP_FIELD]: step } : rest);
    const ttl = Math.max(1, Math.ceil(expiresAt - Date.now() / 1000));
    await this.#store.putModel(key, raw, ttl, undefined, { consumable: false });
    writtenInteractions(this.#store).remember(key, raw, ttl);
    interactionReads.getStore()?.set(key, raw);
  }

  async clear(uid: string, expiresAt: number): Promise<void> {
    await this.set(uid, undefined, expiresAt);
  }
}

/**
 * The step's field in the interaction's stored record. oidc-provider keeps only its own fields of a
 * record it loads, so its next save of the interaction (the login result) drops the step by itself.
 */
const STEP_FIELD = 'lkSignInStep';
