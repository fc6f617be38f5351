import { createHash } from 'node:crypto';
import type { Context } from 'koa';
import { userView } from '../operations.ts';
import type { Actor } from '../operations.ts';
import { localeOfRequest } from '../../i18n/locale.ts';
import { invitationCreate, parseInput, passwordBody, userCreate, userUpdate } from '../inputs.ts';
import { badCursor, bodyOf, confirmed, done, fieldErrors, notFound, PAGE, render, text, unlessGone, whoOf, type Kit } from './kit.ts';

const HOW = { created: 'the account was created through it', signin: 'confirmed at sign-in', account_page: 'from their account page' } as const;

/** People: list and search → detail (factors, sessions, connected apps) → actions. */
export function usersScreen(kit: Kit) {
  const { router, ops, admin, post } = kit;

  /** The list, with the pending invitations and the invite form under it. */
  async function usersList(ctx: Context, extra: Record<string, unknown> = {}) {
    const q = typeof ctx.query.q === 'string' ? ctx.query.q.trim().slice(0, 254) : '';
    const page = await ops.userPage({ cursor: ctx.query.cursor as string | undefined, limit: PAGE, ...(q ? { emailPrefix: q } : {}) });
    const { invitations } = await ops.listInvitations();
    render(kit, ctx, 'users', { title: 'Users', users: page.users, next: page.next, q, invitations, emailOn: ops.emailOn, errors: {}, values: {}, ...extra });
  }

  router.get('/users', admin, async (ctx) => {
    if (badCursor(kit, ctx)) return;
    await usersList(ctx);
  });

  /** Add a user: an invitation by mail (EMAIL on), or the account now with a one-time set-password link to hand over. */
  function newUserPage(ctx: Context, extra: Record<string, unknown> = {}) {
    render(kit, ctx, 'user-new', { title: 'New user', emailOn: ops.emailOn, errors: {}, values: { how: ops.emailOn ? 'invite' : 'link' }, ...extra });
  }

  // Registered before /users/:id, which would take "new" for an id.
  router.get('/users/new', admin, (ctx) => newUserPage(ctx));

  router.post('/users/new', ...post, async (ctx) => {
    const body = bodyOf(ctx);
    const how = ops.emailOn && text(body, 'how', 10) === 'invite' ? 'invite' : 'link';
    const values = { email: text(body, 'email', 254).trim(), name: text(body, 'name', 200).trim(), admin: body.admin === 'on', how };
    const who = whoOf(ctx).actor;
    try {
      if (how === 'invite') {
        const input = parseInput(invitationCreate, { email: values.email, ...(values.name ? { name: values.name } : {}), admin: values.admin });
        const { invitation } = await ops.inviteUser(who, input, localeOfRequest(ctx).locale);
        return done(ctx, '/admin/users', `Invitation sent to ${invitation.email}.`);
      }
      const input = parseInput(userCreate, { email: values.email, ...(values.name ? { name: values.name } : {}), admin: values.admin, set_password_link: true });
      const created = await ops.createUser(who, { email: input.email, ...(input.name ? { name: input.name } : {}), admin: input.admin, setPasswordLink: true });
      // The link is this answer's only: never in a flash cookie, never again.
      render(kit, ctx, 'user-link', { title: `${created.user.email} can set a password`, user: created.user, link: created.set_password_link, expires: created.set_password_link_expires, created: true });
    } catch (err) {
      const errors = fieldErrors(err, { email: 'email', name: 'name' }, 'email');
      if (!errors) throw err;
      ctx.status = (err as { status?: number }).status ?? 400;
      newUserPage(ctx, { errors, values });
    }
  });

  // Invitations: registered before /users/:id/:action, which would take /users/invitations/<action>.
  router.post('/users/invite', ...post, async (ctx) => {
    const body = bodyOf(ctx);
    const values = { email: text(body, 'email', 254).trim(), name: text(body, 'name', 200).trim(), admin: body.admin === 'on' };
    try {
      const input = parseInput(invitationCreate, { email: values.email, ...(values.name ? { name: values.name } : {}), admin: values.admin });
      // The mail speaks the inviting admin's language (their pages' choice), else the default.
      const { invitation } = await ops.inviteUser(whoOf(ctx).actor, input, localeOfRequest(ctx).locale);
      done(ctx, '/admin/users', `Invitation sent to ${invitation.email}.`);
    } catch (err) {
      const errors = fieldErrors(err, { email: 'email', name: 'name' }, 'email');
      if (!errors) throw err;
      ctx.status = 400;
      await usersList(ctx, { errors, values });
    }
  });

  router.post('/users/invitations/:action', ...post, async (ctx) => {
    const action = ctx.params.action;
    if (action !== 'revoke' && action !== 'resend') return notFound(kit, ctx, 'That action');
    const email = text(bodyOf(ctx), 'email', 254);
    try {
      const { invitation } = action === 'revoke' ? await ops.revokeInvitation(whoOf(ctx).actor, email) : await ops.resendInvitation(whoOf(ctx).actor, email);
      done(ctx, '/admin/users', action === 'revoke' ? `Invitation of ${invitation.email} revoked: its link no longer works.` : `A new link was sent to ${invitation.email}; the previous one no longer works.`);
    } catch (err) {
      const errors = fieldErrors(err, {}, 'invitations');
      if (!errors) throw err;
      ctx.status = (err as { status?: number }).status ?? 400;
      await usersList(ctx, { errors });
    }
  });

  async function userPage(ctx: Context, id: string, extra: Record<string, unknown> = {}) {
    // By id only: an email in the path is not a user page.
    const account = id.includes('@') ? undefined : await unlessGone(ops.findUser(id));
    if (!account) return notFound(kit, ctx, 'That user');
    // Factors as `user show` lists them: the app and every passkey; recovery codes come with either.
    const [{ sessions }, recovery, lockouts, { factors }, connected, { identities }, providers] = await Promise.all([
      ops.userSessions(account.id),
      ops.recoveryCodes(account.id),
      ops.lockouts(),
      ops.user(account.id),
      ops.connectedApps(account.id),
      ops.userUpstreams(account.id),
      ops.providers(),
    ]);
    // Linked upstream identities: the upstream's address when it gave one, else a digest of its subject (an opaque id there).
    const upstreams = identities.map((i) => ({
      provider: i.provider, name: providers.find((p) => p.id === i.provider)?.name ?? `${i.provider} (removed)`,
      who: i.email ?? `subject ${createHash('sha256').update(`${i.iss}\n${i.sub}`).digest('hex').slice(0, 12)}`,
      how: HOW[i.via], linked: i.linked, lastUsed: i.last_used, lastWayIn: i.last_way_in,
    }));
    // Connected apps: the apps this person granted access to (remembered consent), as on their account page.
    // The apps each session signed in to, by name (an app deleted since: its id).
    const ids = [...new Set(sessions.flatMap((s) => s.clients))];
    const names = new Map(await Promise.all(ids.map(async (c) => [c, (await unlessGone(ops.client(c)))?.client_name ?? c] as const)));
    const shown = sessions.map((s) => ({ ...s, apps: s.clients.map((c) => names.get(c) ?? c) }));
    const apps = connected.apps.map((a) => ({ id: a.client_id, name: a.name ?? a.client_id, scope: a.scope, granted: a.granted, lastUsed: a.last_used }));
    const user = userView(account);
    render(kit, ctx, 'user', {
      title: account.email, user, self: account.id === whoOf(ctx).account.id, emailOn: ops.emailOn,
      factors: factors.map((f) => ({ ...f, lastUsed: 'last_used' in f ? f.last_used : undefined })),
      hasRecovery: recovery.has_recovery_codes, recoveryLeft: recovery.unused,
      sessions: shown, apps, upstreams, locked: lockouts.some((l) => (l as { accountId?: string }).accountId === account.id), errors: {}, values: { name: user.name ?? '', email: user.email }, ...extra,
    });
  }

  router.get('/users/:id', admin, (ctx) => userPage(ctx, ctx.params.id!));

  // Name and address: a changed address is unconfirmed until the person follows the link mailed to it (EMAIL on).
  router.post('/users/:id/edit', ...post, async (ctx) => {
    const id = ctx.params.id!;
    if (id.includes('@') || !(await unlessGone(ops.findUser(id)))) return notFound(kit, ctx, 'That user');
    const body = bodyOf(ctx);
    const values = { name: text(body, 'name', 200).trim(), email: text(body, 'email', 254).trim() };
    try {
      const { changed, verification_sent: mailed } = await ops.updateUser(whoOf(ctx).actor, id, parseInput(userUpdate, { name: values.name, email: values.email }));
      const notice = !changed.length ? 'Nothing changed.'
        : changed.includes('email') ? `Saved. The new address is unconfirmed${mailed ? ': a link to confirm it is on its way to it' : ''}; the old one was told.` : 'Saved.';
      done(ctx, `/admin/users/${encodeURIComponent(id)}`, notice);
    } catch (err) {
      const errors = fieldErrors(err, { email: 'email', name: 'name' }, 'edit');
      if (!errors) throw err;
      ctx.status = (err as { status?: number }).status ?? 400;
      await userPage(ctx, id, { errors, values });
    }
  });

  /** The person actions: each a form on the user's page; those that end something need the box ticked. */
  const ACTIONS: Record<string, { confirm: boolean; run: (actor: Actor, id: string, body: Record<string, unknown>) => Promise<unknown>; done: string }> = {
    disable: { confirm: true, run: (a, id) => ops.setUserDisabled(a, id, true), done: 'Disabled and signed out everywhere.' },
    enable: { confirm: true, run: (a, id) => ops.setUserDisabled(a, id, false), done: 'Enabled: they can sign in again.' },
    'reset-mfa': { confirm: true, run: (a, id) => ops.resetUserMfa(a, id), done: 'Second factor removed: they set one up at their next sign-in.' },
    unlock: { confirm: false, run: (a, id) => ops.unlockUser(a, id), done: 'Unlocked: failed attempts forgotten.' },
    'revoke-sessions': { confirm: true, run: (a, id) => ops.revokeUserSessions(a, id), done: 'Signed out everywhere.' },
    'grant-admin': { confirm: true, run: (a, id) => ops.setUserAdmin(a, id, true), done: 'Now an admin.' },
    'revoke-admin': { confirm: true, run: (a, id) => ops.setUserAdmin(a, id, false), done: 'No longer an admin.' },
    password: { confirm: false, run: (a, id, body) => ops.setUserPassword(a, id, parseInput(passwordBody, { password: text(body, 'password', 1024) }).password), done: 'Password set; they were signed out everywhere.' },
    delete: { confirm: true, run: (a, id) => ops.deleteUser(a, id), done: 'User deleted and signed out everywhere.' },
    'password-reset': { confirm: false, run: (a, id) => ops.sendPasswordReset(a, id), done: 'A password reset link is on its way to them by email.' },
    'password-link': { confirm: false, run: (a, id) => ops.createPasswordLink(a, id), done: '' },
    'end-session': { confirm: false, run: (a, id, body) => ops.endUserSession(a, id, text(body, 'handle', 100)), done: 'Session ended: that browser is signed out and its apps\' tokens revoked.' },
    'unlink-upstream': { confirm: false, run: (a, id, body) => ops.unlinkUserUpstream(a, id, text(body, 'provider', 100)), done: 'Unlinked: that provider no longer signs them in.' },
    'revoke-app': { confirm: false, run: (a, id, body) => ops.revokeConnectedApp(a, id, text(body, 'client_id', 200)), done: 'Access removed: the app\'s tokens were revoked and it asks for consent at the next sign-in.' },
  };

  router.post('/users/:id/:action', ...post, async (ctx) => {
    const name = ctx.params.action!;
    const action = ACTIONS[name];
    if (!action) return notFound(kit, ctx, 'That action');
    const id = ctx.params.id!;
    const who = whoOf(ctx);
    const refuse = (message: string, status = 400) => {
      ctx.status = status;
      return userPage(ctx, id, { errors: { [name]: message } });
    };
    if (id.includes('@') || !(await unlessGone(ops.findUser(id)))) return notFound(kit, ctx, 'That user');
    if (action.confirm && !confirmed(ctx)) return refuse('Tick the box to confirm.');
    // An admin cannot lock themself out of the console by mistake (the page does not offer it; Operations refuses it too); another admin can.
    if (id === who.account.id && ['disable', 'revoke-admin', 'delete'].includes(name)) return refuse('You cannot do this to your own account; ask another admin.');
    let link: Awaited<ReturnType<typeof ops.createPasswordLink>> | undefined;
    try {
      if (name === 'password-link') link = await ops.createPasswordLink(who.actor, id);
      else await action.run(who.actor, id, bodyOf(ctx));
    } catch (err) {
      const problems = fieldErrors(err, {}, name);
      if (!problems) throw err;
      // Operations' own status, as the API answers it (409 for a conflict such as the last way in).
      return refuse(Object.values(problems).join(' '), (err as { status?: number }).status);
    }
    // A new link is this answer's only (as a new secret is): shown now, never again.
    if (link) return render(kit, ctx, 'user-link', { title: `A link for ${link.email}`, user: { id: link.id, email: link.email }, link: link.set_password_link, expires: link.expires, created: false });
    done(ctx, name === 'delete' ? '/admin/users' : `/admin/users/${encodeURIComponent(id)}`, action.done);
  });
}
