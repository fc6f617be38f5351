import type { Context } from 'koa';
import { userView } from '../operations.ts';
import type { Actor } from '../operations.ts';
import { invitationCreate, parseInput, passwordBody } from '../inputs.ts';
import { badCursor, bodyOf, confirmed, done, fieldErrors, notFound, PAGE, render, text, unlessGone, whoOf, type Kit } from './kit.ts';

/** People: list and search → detail (factors, sessions, connected apps) → actions. */
export function usersScreen(kit: Kit) {
  const { router, ops, admin, post } = kit;

  /** The list, with the pending invitations and the invite form under it. */
  async function usersList(ctx: Context, extra: Record<string, unknown> = {}) {
    const q = typeof ctx.query.q === 'string' ? ctx.query.q.trim().slice(0, 254) : '';
    const page = await ops.userPage({ cursor: ctx.query.cursor as string | undefined, limit: PAGE, ...(q ? { emailPrefix: q } : {}) });
    const { invitations } = await ops.listInvitations();
    const pending = invitations.map((i) => ({ ...i, expires: i.expires.slice(0, 16).replace('T', ' ') }));
    render(kit, ctx, 'users', { title: 'Users', users: page.users, next: page.next, q, invitations: pending, errors: {}, values: {}, ...extra });
  }

  router.get('/users', admin, async (ctx) => {
    if (badCursor(kit, ctx)) return;
    await usersList(ctx);
  });

  // Invitations: registered before /users/:id/:action, which would take /users/invitations/<action>.
  router.post('/users/invite', ...post, async (ctx) => {
    const body = bodyOf(ctx);
    const values = { email: text(body, 'email', 254).trim(), name: text(body, 'name', 200).trim(), admin: body.admin === 'on' };
    try {
      const input = parseInput(invitationCreate, { email: values.email, ...(values.name ? { name: values.name } : {}), admin: values.admin });
      const { invitation } = await ops.inviteUser(whoOf(ctx).actor, input);
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
    const [{ sessions }, recovery, lockouts, { factors }, connected] = await Promise.all([
      ops.userSessions(account.id),
      ops.recoveryCodes(account.id),
      ops.lockouts(),
      ops.user(account.id),
      ops.connectedApps(account.id),
    ]);
    // Connected apps: the apps this person granted access to (remembered consent), as on their account page.
    // The apps each session signed in to, by name (an app deleted since: its id).
    const ids = [...new Set(sessions.flatMap((s) => s.clients))];
    const names = new Map(await Promise.all(ids.map(async (c) => [c, (await unlessGone(ops.client(c)))?.client_name ?? c] as const)));
    const shown = sessions.map((s) => ({ ...s, apps: s.clients.map((c) => names.get(c) ?? c) }));
    const apps = connected.apps.map((a) => ({ id: a.client_id, name: a.name ?? a.client_id, scope: a.scope, granted: (a.granted ?? '').slice(0, 10), lastUsed: (a.last_used ?? '').slice(0, 10) }));
    render(kit, ctx, 'user', {
      title: account.email, user: userView(account), self: account.id === whoOf(ctx).account.id,
      factors: factors.map((f) => ({ ...f, created: f.created.slice(0, 10), lastUsed: 'last_used' in f && f.last_used ? f.last_used.slice(0, 10) : undefined })),
      hasRecovery: recovery.has_recovery_codes, recoveryLeft: recovery.unused,
      sessions: shown, apps, locked: lockouts.some((l) => (l as { accountId?: string }).accountId === account.id), errors: {}, ...extra,
    });
  }

  router.get('/users/:id', admin, (ctx) => userPage(ctx, ctx.params.id!));

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
    'end-session': { confirm: false, run: (a, id, body) => ops.endUserSession(a, id, text(body, 'handle', 100)), done: 'Session ended: that browser is signed out and its apps\' tokens revoked.' },
    'revoke-app': { confirm: false, run: (a, id, body) => ops.revokeConnectedApp(a, id, text(body, 'client_id', 200)), done: 'Access removed: the app\'s tokens were revoked and it asks for consent at the next sign-in.' },
  };

  router.post('/users/:id/:action', ...post, async (ctx) => {
    const name = ctx.params.action!;
    const action = ACTIONS[name];
    if (!action) return notFound(kit, ctx, 'That action');
    const id = ctx.params.id!;
    const who = whoOf(ctx);
    const refuse = (message: string) => {
      ctx.status = 400;
      return userPage(ctx, id, { errors: { [name]: message } });
    };
    if (id.includes('@') || !(await unlessGone(ops.findUser(id)))) return notFound(kit, ctx, 'That user');
    if (action.confirm && !confirmed(ctx)) return refuse('Tick the box to confirm.');
    // An admin cannot lock themself out of the console by mistake; another admin can.
    if (id === who.account.id && ['disable', 'revoke-admin'].includes(name)) return refuse('You cannot do this to your own account; ask another admin.');
    try {
      await action.run(who.actor, id, bodyOf(ctx));
    } catch (err) {
      const problems = fieldErrors(err, {}, name);
      if (!problems) throw err;
      return refuse(Object.values(problems).join(' '));
    }
    done(ctx, `/admin/users/${encodeURIComponent(id)}`, action.done);
  });
}
