import Router from '@koa/router';
import type { Views } from '../views.ts';
import type { Outbox } from './transport.ts';

/**
 * /dev/outbox: what the development outbox holds, links clickable (development without SMTP_URL only;
 * app.ts never mounts it in production or tests unless a test asks for it).
 */
export function outboxRoutes(outbox: Outbox, views: Views) {
  const router = new Router();
  router.get('/dev/outbox', (ctx) => {
    views.render(ctx, 'outbox', {
      title: 'Development outbox',
      messages: outbox.messages.map((m) => ({
        to: m.to,
        subject: m.subject,
        sentAt: new Date(m.sentAt).toISOString().replace('T', ' ').slice(0, 19),
        // The text part, one paragraph per block; a line that is an address of this server becomes a link.
        parts: m.text.split(/\n\n+/).flatMap((block) => block.split('\n').map((line) => (/^https?:\/\/\S+$/.test(line) ? { href: line } : { text: line }))),
      })),
    });
  });
  return router;
}
