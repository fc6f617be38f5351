import type { Context } from 'koa';
import { Refusal } from '../../problems.ts';
import { confirmed, consoleFieldNames, done, render, whoOf, type Kit } from './kit.ts';

/** Signing keys: the list, and a rotation. */
export function keysScreen(kit: Kit) {
  async function keysPage(ctx: Context, extra: Record<string, unknown> = {}) {
    render(kit, ctx, 'keys', { title: 'Signing keys', keys: await kit.ops.signingKeys(), errors: {}, ...extra });
  }

  kit.router.get('/keys', kit.admin, (ctx) => keysPage(ctx));

  kit.router.post('/keys/rotate', ...kit.post, async (ctx) => {
    if (!confirmed(ctx)) {
      ctx.status = 400;
      return keysPage(ctx, { errors: { rotate: 'Tick the box to confirm the rotation.' } });
    }
    try {
      await kit.ops.rotateSigningKeys(whoOf(ctx).actor);
    } catch (err) {
      if (!(err instanceof Refusal)) throw err;
      ctx.status = err.status;
      return keysPage(ctx, { errors: { rotate: err.render(consoleFieldNames) } });
    }
    done(ctx, '/admin/keys', 'Rotated: a new key signs from now on; the previous one still verifies until it retires.');
  });
}
