import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import Router from '@koa/router';
import type { Config } from './config.ts';

/**
 * Whose server this is: the product name, accent colour and logo of every page and every mail
 * (BRAND_NAME, BRAND_ACCENT, BRAND_LOGO). Worked out once at start from the configuration, which
 * has already refused an unreadable accent and a logo that is not an https URL or a usable file.
 */
export interface Brand {
  name: string;
  /** #rrggbb: the background of buttons (pages and mail). */
  accent: string;
  /** The text on the accent: white, or the pages' ink when white does not read on it. */
  onAccent: string;
  /** The accent as text on a white page (links, the brand line): the accent, or darkened until it reads. */
  accentInk: string;
  /** The same on the pages' dark scheme: the accent, or lightened until it reads on a dark canvas. */
  accentInkDark: string;
  logo?: {
    /** What pages put in `<img src>`: the https URL, or the fixed path the file is served at. */
    src: string;
    /** The same as an absolute URL, for mail. */
    url: string;
    /** The https URL's origin, the one image source the CSP gains for it (none for a file: 'self'). */
    origin?: string;
    file?: LogoFile;
  };
}

export const DEFAULT_BRAND_NAME = 'Latchkey';
export const DEFAULT_ACCENT = '#2f5bd3';
/** The pages' text colour (style.css's light scheme, the mail's body). */
const INK = '#1b1b1f';
const WHITE = '#ffffff';
/**
 * The backgrounds of the dark scheme (style.css has `color-scheme: light dark`): Chromium's and Firefox's
 * dark Canvas. The accent's 14 % tint over them (current nav entry, badges) is checked too.
 */
const DARK_CANVASES = ['#121212', '#1c1b22'];
/** WCAG 2.x AA for normal text. */
const READABLE = 4.5;
/** Where a logo file is served (fixed, so a page never names a file of the server's disk). */
export const LOGO_PATH = '/static/logo';
/** Logos are small; a larger file is likely not the one meant and would slow every page. */
export const LOGO_MAX_BYTES = 256 * 1024;

/** WCAG 2.x relative luminance of #rrggbb. */
function luminance(hex: string): number {
  const [r, g, b] = [1, 3, 5].map((i) => {
    const c = parseInt(hex.slice(i, i + 2), 16) / 255;
    return c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  });
  return 0.2126 * r! + 0.7152 * g! + 0.0722 * b!;
}

/** WCAG 2.x contrast ratio of two #rrggbb colours (1 to 21). */
export function contrastRatio(a: string, b: string): number {
  const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
  return (hi! + 0.05) / (lo! + 0.05);
}

/** The text colour for an accent: white when it reads, else the pages' ink; undefined when neither does. */
export function textOnAccent(accent: string): string | undefined {
  if (contrastRatio(accent, WHITE) >= READABLE) return WHITE;
  if (contrastRatio(accent, INK) >= READABLE) return INK;
  return undefined;
}

/** Why an accent cannot be used (neither white nor dark text reads on it), or undefined. */
export function accentProblem(accent: string): string | undefined {
  if (textOnAccent(accent)) return undefined;
  const ratio = (c: string) => contrastRatio(accent, c).toFixed(2);
  return `text on it would not be readable: white has a contrast of ${ratio(WHITE)}:1 and dark text ${ratio(INK)}:1, WCAG AA needs ${READABLE}:1; choose a darker or a lighter colour`;
}

/** The accent mixed towards black, in small steps, until it reads as text on white. */
function inkOf(accent: string): string {
  const channels = [1, 3, 5].map((i) => parseInt(accent.slice(i, i + 2), 16));
  for (let keep = 1; keep >= 0; keep -= 0.05) {
    const hex = `#${channels.map((c) => Math.round(c * keep).toString(16).padStart(2, '0')).join('')}`;
    if (contrastRatio(hex, WHITE) >= READABLE) return hex;
  }
  return '#000000';
}

/** #rrggbb `from` mixed with `to` by `share` (0 to 1), as CSS color-mix in sRGB does. */
function mixed(from: string, to: string, share: number): string {
  const channel = (hex: string, i: number) => parseInt(hex.slice(i, i + 2), 16);
  return `#${[1, 3, 5].map((i) => Math.round(channel(from, i) * (1 - share) + channel(to, i) * share).toString(16).padStart(2, '0')).join('')}`;
}

/** Whether a colour reads as text on every dark background of the pages. */
export function readsOnDark(ink: string, accent: string): boolean {
  return DARK_CANVASES.every((canvas) => contrastRatio(ink, canvas) >= READABLE && contrastRatio(ink, mixed(canvas, accent, 0.14)) >= READABLE);
}

/** The accent mixed towards white, in small steps, until it reads as text on the dark scheme's backgrounds. */
export function darkInkOf(accent: string): string {
  for (let step = 0; step <= 20; step++) {
    const hex = mixed(accent, WHITE, step / 20);
    if (readsOnDark(hex, accent)) return hex;
  }
  return WHITE;
}

export interface LogoFile {
  body: Buffer;
  type: 'image/png' | 'image/svg+xml' | 'image/webp';
}

const isUrlLike = (value: string) => /^[a-z][a-z0-9+.-]*:/i.test(value) && !/^[a-z]:[\\/]/i.test(value);

/** Why BRAND_LOGO cannot be used, or undefined: an https URL, or a readable PNG, SVG or WebP file of at most LOGO_MAX_BYTES. */
export function logoProblem(value: string): string | undefined {
  if (isUrlLike(value)) {
    const url = URL.parse(value);
    if (url?.protocol !== 'https:') return 'must be an https:// URL (browsers and mail clients block or warn about http images on https pages) or a file path';
    if (url.username || url.password) return 'must not carry a user name or password';
    return undefined;
  }
  try {
    readLogoFile(value);
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

/** Reads a logo file, checking that it is what its name says (the browser is told its type). */
export function readLogoFile(path: string): LogoFile {
  const extension = /\.(png|svg|webp)$/i.exec(path)?.[1]?.toLowerCase();
  if (!extension) throw new Error('must be an https:// URL, or a file ending in .png, .svg or .webp');
  let size: number;
  try {
    size = statSync(path).size;
  } catch {
    throw new Error('names a file that cannot be read');
  }
  if (size > LOGO_MAX_BYTES) throw new Error(`is a file of ${size} bytes: at most ${LOGO_MAX_BYTES} (a logo shown at 32 pixels needs far less)`);
  const body = readFileSync(path);
  const looksLike = {
    png: body.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])),
    webp: body.subarray(0, 4).toString('latin1') === 'RIFF' && body.subarray(8, 12).toString('latin1') === 'WEBP',
    svg: /<svg[\s>]/.test(body.subarray(0, 4096).toString('utf8')),
  }[extension];
  if (!looksLike) throw new Error(`is not a ${extension.toUpperCase()} file (its content does not match its name)`);
  const type = ({ png: 'image/png', svg: 'image/svg+xml', webp: 'image/webp' } as const)[extension as 'png' | 'svg' | 'webp'];
  return { body, type };
}

/** The brand of a configuration (already validated by config.ts). */
export function brandOf(config: Pick<Config, 'BRAND_NAME' | 'BRAND_ACCENT' | 'BRAND_LOGO' | 'ISSUER'>): Brand {
  const accent = config.BRAND_ACCENT;
  const onAccent = textOnAccent(accent) ?? INK;
  const brand: Brand = { name: config.BRAND_NAME, accent, onAccent, accentInk: contrastRatio(accent, WHITE) >= READABLE ? accent : inkOf(accent), accentInkDark: darkInkOf(accent) };
  const logo = config.BRAND_LOGO;
  if (logo && isUrlLike(logo)) brand.logo = { src: logo, url: logo, origin: new URL(logo).origin };
  else if (logo) {
    const file = readLogoFile(logo);
    // The digest names the version, so the day's cache never shows yesterday's logo after a change.
    const src = `${LOGO_PATH}?v=${createHash('sha256').update(file.body).digest('hex').slice(0, 12)}`;
    brand.logo = { src, url: `${config.ISSUER}${src}`, file };
  }
  return brand;
}

/** The brand's colours as style.css's custom properties (appended to it, so no inline style is needed); the accent as text lighter on dark pages. */
export function brandStyle(brand: Brand): string {
  return `\n/* BRAND_ACCENT */\n:root { --accent: ${brand.accent}; --on-accent: ${brand.onAccent}; --accent-ink: ${brand.accentInk}; }\n@media (prefers-color-scheme: dark) { :root { --accent-ink: ${brand.accentInkDark}; } }\n`;
}

/** Image sources beyond 'self' that every page needs: the https logo's origin, nothing broader. */
export function brandImageSources(brand: Brand): string[] {
  return brand.logo?.origin ? [brand.logo.origin] : [];
}

/**
 * The logo file at its fixed path. An SVG can hold script: it is served as an image only, with a CSP
 * that runs nothing and a sandbox, so opening it on its own does nothing either.
 */
export function logoRoutes(brand: Brand) {
  const router = new Router();
  const file = brand.logo?.file;
  if (!file) return router;
  router.get(LOGO_PATH, (ctx) => {
    ctx.type = file.type;
    ctx.set('Cache-Control', 'public, max-age=86400');
    ctx.set('Content-Security-Policy', "default-src 'none'; style-src 'unsafe-inline'; sandbox");
    ctx.set('Content-Disposition', 'inline; filename="logo"');
    ctx.body = file.body;
  });
  return router;
}
