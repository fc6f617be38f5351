import type { Brand } from '../brand.ts';
import { formatMoment, translator, type Translate } from '../i18n/catalogue.ts';
import type { Locale } from '../i18n/locale.ts';
import type { Mail } from './queue.ts';

/**
 * What Latchkey writes to people: plain text and HTML in the look of the sign-in pages (one card, the
 * brand on top, one button). Mail clients ignore stylesheets, so the HTML's styles are inline.
 * Each message is a `Letter`: written for a brand (the product name, accent and logo of BRAND_*),
 * which the queue that sends it supplies, so no caller has to carry the brand around.
 */
export type Letter = (brand: Brand) => Mail;

const escape = (text: string) => text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

interface Draft {
  to: string;
  subject: string;
  /** Paragraphs before the button. */
  lines: string[];
  action?: { label: string; url: string };
  /** Paragraphs after it, in small print. */
  after?: string[];
  /** The person's language (absent: English). */
  locale?: Locale;
}

/** A letter from a draft written for the brand's name. */
const letter = (write: (product: string) => Draft): Letter => (brand) => compose(write(brand.name), brand);

function compose(draft: Draft, brand: Brand): Mail {
  const { lines, action, after = [], locale = 'en' } = draft;
  const text = [
    ...lines,
    ...(action ? [`${action.label}:\n${action.url}`] : []),
    ...after,
    `— ${brand.name}`,
  ].join('\n\n');
  const p = (t: string, small = false) => `<p style="margin:0 0 1rem;${small ? 'font-size:14px;color:#666;' : ''}">${escape(t)}</p>`;
  // The logo is decorative (the name follows it); an absolute URL, as mail has no base address.
  const logo = brand.logo ? `<img src="${escape(brand.logo.url)}" alt="" height="28" style="height:28px;width:auto;margin-right:8px;vertical-align:middle;border:0">` : '';
  const html = `<!doctype html><html lang="${locale}"><head><meta charset="utf-8"><title>${escape(draft.subject)}</title></head>
<body style="margin:0;padding:24px 0;background:#f4f5f7;font:16px/1.5 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1b1b1f">
<div style="max-width:26rem;margin:0 auto;padding:2rem;background:#fff;border:1px solid #e0e0e4;border-radius:12px">
<p style="margin:0 0 1rem;font-weight:700;letter-spacing:.04em;color:${brand.accentInk}">${logo}${escape(brand.name)}</p>
<h1 style="margin:0 0 1rem;font-size:1.4rem">${escape(draft.subject)}</h1>
${lines.map((l) => p(l)).join('\n')}
${action ? `<p style="margin:1.25rem 0"><a href="${escape(action.url)}" style="display:block;padding:.7rem;text-align:center;font-weight:600;border-radius:8px;background:${brand.accent};color:${brand.onAccent};text-decoration:none">${escape(action.label)}</a></p>
<p style="margin:0 0 1rem;font-size:13px;color:#666;word-break:break-all">${escape(translator(locale)('mail.orOpen', { url: action.url }))}</p>` : ''}
${after.map((l) => p(l, true)).join('\n')}
</div></body></html>`;
  return { to: draft.to, subject: draft.subject, text, html };
}

/** A link's lifetime in words: whole days (where `days`) or hours as such, else minutes. */
function lifetime(t: Translate, seconds: number, days = false): string {
  if (days && seconds % 86400 === 0) return t('mail.days', { count: seconds / 86400 });
  if (seconds % 3600 === 0) return t('mail.hours', { count: seconds / 3600 });
  return t('mail.minutes', { count: Math.round(seconds / 60) });
}

export function passwordResetMail(to: string, url: string, ttlSeconds: number, locale: Locale = 'en'): Letter {
  const t = translator(locale);
  return letter((product) => ({
    to,
    locale,
    subject: t('mail.resetSubject', { product }),
    lines: [t('mail.resetLine', { email: to })],
    action: { label: t('mail.resetAction'), url },
    after: [t('mail.resetAfter', { ttl: lifetime(t, ttlSeconds) }), t('mail.resetSecondStep')],
  }));
}

export function verifyAddressMail(to: string, url: string, ttlSeconds: number, locale: Locale = 'en'): Letter {
  const t = translator(locale);
  return letter((product) => ({
    to,
    locale,
    subject: t('mail.verifySubject'),
    lines: [t('mail.verifyLine', { email: to, product })],
    action: { label: t('mail.verifyAction'), url },
    after: [t('mail.verifyAfter', { ttl: lifetime(t, ttlSeconds) })],
  }));
}

export function changeAddressMail(to: string, from: string, url: string, ttlSeconds: number, locale: Locale = 'en'): Letter {
  const t = translator(locale);
  return letter((product) => ({
    to,
    locale,
    subject: t('mail.changeSubject'),
    lines: [t('mail.changeLine', { product, email: to, from })],
    action: { label: t('mail.changeAction'), url },
    after: [t('mail.changeAfter', { ttl: lifetime(t, ttlSeconds) })],
  }));
}

/** To the old address when a change to `to` is asked for: the way to say "this was not me". */
export function addressChangeNoticeMail(oldAddress: string, newAddress: string, reportUrl: string, ttlSeconds: number, locale: Locale = 'en'): Letter {
  const t = translator(locale);
  return letter((product) => ({
    to: oldAddress,
    locale,
    subject: t('mail.noticeChangeSubject', { product }),
    lines: [t('mail.noticeChangeLine', { from: oldAddress, email: newAddress })],
    action: { label: t('mail.noticeChangeAction'), url: reportUrl },
    after: [t('mail.noticeChangeAfter', { ttl: lifetime(t, ttlSeconds) })],
  }));
}

export type SecurityEvent = 'password-changed' | 'password-reset' | 'authenticator-added' | 'authenticator-removed' | 'passkey-added' | 'passkey-removed' | 'recovery-codes' | 'address-changed' | 'second-factor-reset';

/** A security notice: what changed, when, and what to do if it was not the person (or, `byAdministrator`, not asked for), in their language. */
export function securityNoticeMail(to: string, event: SecurityEvent, at: Date, forgotUrl: string, byAdministrator = false, locale: Locale = 'en'): Letter {
  const t = translator(locale);
  // English keeps the RFC 7231 date its readers (and tests) know.
  const when = t('mail.when', { when: locale === 'en' ? at.toUTCString() : formatMoment(locale, at.getTime()) });
  return letter((product) => ({
    to,
    locale,
    subject: t('mail.securitySubject', { what: t(`mail.subject.${event}`) }),
    lines: [
      t(`mail.what.${event}`, { product }),
      ...(byAdministrator ? [t('mail.byAdmin'), when, t('mail.ifAsked')] : [when, t('mail.ifYou')]),
    ],
    action: { label: t('mail.notMeAction'), url: forgotUrl },
    after: [t('mail.notMeAfter')],
  }));
}

/** An operator's invitation: the link creates the account (the person picks the password). */
export function invitationMail(to: string, url: string, ttlSeconds: number, name?: string, locale: Locale = 'en'): Letter {
  const t = translator(locale);
  return letter((product) => ({
    to,
    locale,
    subject: t('mail.inviteSubject', { product }),
    lines: [name ? t('mail.inviteLineNamed', { name, product, email: to }) : t('mail.inviteLine', { product, email: to })],
    action: { label: t('mail.inviteAction'), url },
    after: [t('mail.inviteAfter', { ttl: lifetime(t, ttlSeconds, true) })],
  }));
}

/** A sign-up's link: opening it makes the account (the person picks a password or a passkey there). */
export function signUpMail(to: string, url: string, ttlSeconds: number, locale: Locale = 'en'): Letter {
  const t = translator(locale);
  return letter((product) => ({
    to,
    locale,
    subject: t('mail.signUpSubject', { product }),
    lines: [t('mail.signUpLine', { email: to })],
    action: { label: t('mail.signUpAction'), url },
    after: [t('mail.signUpAfter', { ttl: lifetime(t, ttlSeconds, true) })],
  }));
}

/** To the owner of an address someone tried to sign up with: the page said the same as for a new one, the mail says what happened. */
export function signUpExistingMail(to: string, signInUrl: string, forgotUrl: string, locale: Locale = 'en'): Letter {
  const t = translator(locale);
  return letter((product) => ({
    to,
    locale,
    subject: t('mail.existingSubject', { product }),
    lines: [t('mail.existingLine', { email: to }), t('mail.existingLine2')],
    action: { label: t('mail.existingAction'), url: signInUrl },
    after: [t('mail.existingForgot', { url: forgotUrl }), t('mail.existingAfter')],
  }));
}
