import type Router from '@koa/router';
import type { Context, Middleware } from 'koa';
import type { Account } from '../../accounts/accounts.ts';
import type { Logger } from '../../observability/logger.ts';
import { Refusal, type FieldNames } from '../../problems.ts';
import { StorageUnavailable } from '../../storage/store.ts';
import type { Csrf } from '../../security/csrf.ts';
import type { Views } from '../../views.ts';
import type { Actor, Operations } from '../operations.ts';

/**
 * What every console screen (one file each in this folder) is built with: the router, Operations (the
 * only way a screen reads or changes anything, as the admin API does), the page helpers, and how a
 * refusal is shown next to its field.
 */
export interface Admin {
  account: Account;
  actor: Actor;
  csrfScope: string;
}

export interface Kit {
  router: Router;
  ops: Operations;
  views: Views;
  csrf: Csrf;
  /** Signed-in admins only (GET). */
  admin: Middleware;
  /** Same origin, urlencoded body, signed-in admin and CSRF token (POST). */
  post: Middleware[];
  /** The embedded in-memory store: the header says nothing survives a restart. */
  embedded: boolean;
  /** ISSUER, as apps are told to use it (an app's Integrate panel). */
  issuer: string;
}

export const PAGE = 25;
export const CURSOR = /^[A-Za-z0-9_-]{1,1024}$/;

export const whoOf = (ctx: Context) => ctx.state.admin as Admin;
export const bodyOf = (ctx: Context) => (ctx.request.body ?? {}) as Record<string, unknown>;
export const text = (body: Record<string, unknown>, name: string, max = 2000) => (typeof body[name] === 'string' ? body[name].slice(0, max) : '');
export const lines = (value: string) => value.split(/\s+/).map((l) => l.trim()).filter(Boolean);
/** A destructive post names what it destroys; without the box ticked, nothing happens. */
export const confirmed = (ctx: Context) => bodyOf(ctx).confirm === 'yes';

export function redirect(ctx: Context, to: string) {
  ctx.status = 303;
  ctx.redirect(to);
}

/** The one way the console writes a time: `2026-12-07 09:14 UTC`, with the ISO value for `<time datetime>`. */
export function when(value: string | number | Date | undefined): { text: string; iso: string } | undefined {
  if (value === undefined || value === '') return undefined;
  const date = new Date(value);
  if (!Number.isFinite(date.getTime())) return undefined;
  const iso = date.toISOString();
  return { text: `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC`, iso };
}

const FLASH = 'lk_admin_flash';
const FLASH_MS = 60_000;

/**
 * A post that worked answers 303 to a page that says so, so a reload never sends it again. The
 * sentence travels in a signed cookie that lives a minute and is read once; never put a secret in it
 * (a new secret is the post's own answer, shown once).
 */
export function done(ctx: Context, to: string, notice: string) {
  ctx.cookies.set(FLASH, Buffer.from(JSON.stringify({ notice, at: Date.now() })).toString('base64url'), { signed: true, httpOnly: true, sameSite: 'lax', path: '/admin', maxAge: FLASH_MS, overwrite: true });
  redirect(ctx, to);
}

/** The flash sentence left by the post before, once; undefined when none, forged or stale. */
function takeFlash(ctx: Context): string | undefined {
  const value = ctx.cookies.get(FLASH, { signed: true });
  if (value === undefined) return undefined;
  ctx.cookies.set(FLASH, null, { signed: true, path: '/admin', overwrite: true });
  try {
    const { notice, at } = JSON.parse(Buffer.from(value, 'base64url').toString()) as { notice?: unknown; at?: unknown };
    return typeof notice === 'string' && typeof at === 'number' && Date.now() - at <= FLASH_MS ? notice.slice(0, 500) : undefined;
  } catch {
    return undefined;
  }
}

export function render(kit: Kit, ctx: Context, view: string, data: Record<string, unknown>) {
  const who = whoOf(ctx);
  const flash = ctx.method === 'GET' ? takeFlash(ctx) : undefined;
  kit.views.render(ctx, `admin/${view}`, { csrf: kit.csrf.token(who.csrfScope), me: who.account.email, path: ctx.path, embedded: kit.embedded, when, ...(flash ? { notice: flash } : {}), ...data });
}

/** A console page that says what went wrong, inside the console's layout. */
export function problem(kit: Kit, ctx: Context, status: number, heading: string, message: string) {
  ctx.status = status;
  render(kit, ctx, 'problem', { title: heading, heading, message });
}

/**
 * A console request that failed unexpectedly, answered inside the console's layout: a calm page with the
 * request id that its log line carries, never a stack. Storage out of reach is a 503 (Retry-After comes
 * from the request context, the outage is logged once); anything else a 500 logged with its stack. Before
 * the guard knows the admin (storage is down), the header names nobody and the page shows no data.
 * A refusal meant for the caller (a 4xx) is not ours to answer: rethrown.
 */
export function failed(kit: Kit, ctx: Context, err: unknown, logger: Logger) {
  const e = err as { status?: number; expose?: boolean };
  if (!(err instanceof StorageUnavailable) && (e.status ?? 500) < 500 && e.expose !== false) throw err;
  const requestId = String(ctx.state.requestId ?? '');
  const storage = err instanceof StorageUnavailable;
  if (storage) logger.debug({ requestId }, 'storage unavailable');
  else logger.error({ err, requestId }, 'unhandled error');
  ctx.status = storage ? 503 : 500;
  const heading = storage ? 'Storage unavailable' : 'Something went wrong';
  const message = storage
    ? 'The console cannot reach its storage right now, so it can neither show nor change anything. Try again in a moment.'
    : 'This page failed on the server. Try again; if it keeps failing, the server\'s log has the details under the request id below.';
  const who = ctx.state.admin as Admin | undefined;
  kit.views.render(ctx, 'admin/problem', { title: heading, heading, message, requestId, path: ctx.path, embedded: kit.embedded, when, ...(who ? { me: who.account.email } : {}) });
}

export function notFound(kit: Kit, ctx: Context, what: string) {
  problem(kit, ctx, 404, 'Not found', `${what} does not exist (any more).`);
}

/** A page link whose cursor this console never made: 400, start again. */
export function badCursor(kit: Kit, ctx: Context, pattern = CURSOR) {
  const value = ctx.query.cursor;
  if (value === undefined || (typeof value === 'string' && pattern.test(value))) return false;
  problem(kit, ctx, 400, 'Page link not valid', 'That page link is not valid; start from the first page.');
  return true;
}

/** The admin API's fields as the console's labels call them, where that is not the name with spaces. */
const LABELS: Record<string, string> = {
  client_name: 'name', grant_types: 'grants', redirect_uris: 'redirect URIs', post_logout_redirect_uris: 'post-logout redirect URIs', token_endpoint_auth_method: 'secret',
  uri: 'identifier', ttl: 'token lifetime', refresh_grace_seconds: 'refresh grace', backchannel_logout_uri: 'back-channel logout URI', logo_uri: 'logo URI', require_pushed_authorization_requests: 'PAR',
};
export const consoleFieldNames: FieldNames = (field) => LABELS[field] ?? field.replaceAll('_', ' ');

/**
 * A refusal (src/problems.ts) as a form shows it: every message next to the form field its field maps to
 * (`fields`: API field → form field; unmapped ones go to `fallback`), in the console's words;
 * `words`: the form's own sentence for a code on a field (`client_name:required`). Undefined: not a refusal.
 */
export function fieldErrors(err: unknown, fields: Record<string, string>, fallback = 'form', words: Record<string, string> = {}): Record<string, string> | undefined {
  if (!(err instanceof Refusal)) return undefined;
  const errors: Record<string, string> = {};
  for (const refusal of err.all) {
    const message = words[`${refusal.field}:${refusal.code}`] ?? refusal.render(consoleFieldNames);
    errors[(refusal.field !== undefined ? fields[refusal.field] : undefined) ?? fallback] ??= message.charAt(0).toUpperCase() + message.slice(1);
  }
  return errors;
}

/** Operations' answer, or undefined when it refused with a 404 (the thing is gone). */
export function unlessGone<T>(promise: Promise<T>): Promise<T | undefined> {
  return promise.catch((err: unknown) => {
    if (err instanceof Refusal && err.status === 404) return undefined;
    throw err;
  });
}
