import type Router from '@koa/router';
import type { Context, Middleware } from 'koa';
import type { Account } from '../../accounts/accounts.ts';
import { Refusal, type FieldNames } from '../../problems.ts';
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

export function render(kit: Kit, ctx: Context, view: string, data: Record<string, unknown>) {
  const who = whoOf(ctx);
  kit.views.render(ctx, `admin/${view}`, { csrf: kit.csrf.token(who.csrfScope), me: who.account.email, path: ctx.path, ...data });
}

export function notFound(kit: Kit, ctx: Context, what: string) {
  ctx.status = 404;
  kit.views.renderError(ctx, { error: 'invalid_request', error_description: `${what} does not exist (any more)` });
}

/** A page link whose cursor this console never made: 400, start again. */
export function badCursor(kit: Kit, ctx: Context, pattern = CURSOR) {
  const value = ctx.query.cursor;
  if (value === undefined || (typeof value === 'string' && pattern.test(value))) return false;
  ctx.status = 400;
  kit.views.renderError(ctx, { error: 'invalid_request', error_description: 'that page link is not valid; start from the first page' });
  return true;
}

/** The admin API's fields as the console's labels call them, where that is not the name with spaces. */
const LABELS: Record<string, string> = {
  client_name: 'name', grant_types: 'grants', redirect_uris: 'redirect URIs', post_logout_redirect_uris: 'post-logout redirect URIs', token_endpoint_auth_method: 'secret',
  uri: 'identifier', ttl: 'token lifetime', refresh_grace_seconds: 'refresh grace', backchannel_logout_uri: 'back-channel logout URI', require_pushed_authorization_requests: 'PAR',
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
