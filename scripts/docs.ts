/**
 * `npm run docs`: rewrites the two tables of the manual that the code owns — the configuration table of
 * docs/configuration.md (from `configDocs` and the defaults of `loadConfig({})`) and the audit events
 * table of docs/operations.md (names and levels from `AUDIT_EVENTS`; the "When" and "Fields" prose of
 * each event from its row on the page). `npm run docs -- --check` changes nothing and exits 1 if a page
 * is stale. test/readme.test.ts fails when they drift.
 *
 * Rows of either table found in README.md (branches written when the README held the manual) are taken
 * from there — their prose wins — and the README's old table blocks are removed, so a merge is one command.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { configDocs, loadConfig } from '../src/config.ts';
import { AUDIT_EVENTS, auditLevel } from '../src/observability/audit.ts';

export const ROOT = new URL('../', import.meta.url);

const CONFIG_HEADER = '| Variable | Default | Meaning |';
const AUDIT_HEADER = '| `event` | Level | When | Fields |';
const SEPARATOR = /^\|(?:-+\|)+$/;
export const CONFIG_ROW = /^\| `([A-Z_]+)` \| (.+?) \| (.+) \|$/;
export const AUDIT_ROW = /^\| `([a-z_]+)` \| (info|warn|error|fatal) \| (.+?) \| (.+) \|$/;

/** Defaults that depend on other settings, as a reader should see them. */
const DERIVED_DEFAULTS: Record<string, string> = {
  ISSUER: '`http://localhost:PORT`',
  WEBAUTHN_RP_ID: "the issuer's host",
  WEBAUTHN_ORIGINS: "the issuer's origin",
};

export function configTable(): string {
  const defaults = loadConfig({}) as Record<string, unknown>;
  const rows = Object.entries(configDocs).map(([name, meaning]) => {
    // eslint-disable-next-line @typescript-eslint/no-base-to-string -- defaults are scalars or lists, shown as String() shows them
    const def = DERIVED_DEFAULTS[name] ?? (defaults[name] === undefined ? 'unset' : `\`${String(defaults[name])}\``);
    return `| \`${name}\` | ${def} | ${meaning} |`;
  });
  return [CONFIG_HEADER, '|---|---|---|', ...rows].join('\n');
}

export interface AuditProse { when: string; fields: string }

/** The "When" and "Fields" of every audit row in a text. */
export function auditProse(text: string): Map<string, AuditProse> {
  const prose = new Map<string, AuditProse>();
  for (const line of text.split('\n')) {
    const m = AUDIT_ROW.exec(line);
    if (m) prose.set(m[1]!, { when: m[3]!, fields: m[4]! });
  }
  return prose;
}

/** The audit table in the order of AUDIT_EVENTS; `missing` names events with no prose anywhere. */
export function auditTable(prose: Map<string, AuditProse>): { table: string; missing: string[] } {
  const missing: string[] = [];
  const rows = AUDIT_EVENTS.map((event) => {
    const p = prose.get(event);
    if (!p) missing.push(event);
    return `| \`${event}\` | ${auditLevel(event)} | ${p?.when ?? 'TODO'} | ${p?.fields ?? 'TODO'} |`;
  });
  return { table: [AUDIT_HEADER, '|---|---|---|---|', ...rows].join('\n'), missing };
}

/** Replaces what lies between `<!-- name:start -->` and `<!-- name:end -->`. */
export function replaceBetween(text: string, name: string, body: string): string {
  const start = `<!-- ${name}:start -->`;
  const end = `<!-- ${name}:end -->`;
  const i = text.indexOf(start);
  const j = text.indexOf(end);
  if (i < 0 || j < i) throw new Error(`the markers ${start} … ${end} are missing`);
  return `${text.slice(0, i + start.length)}\n${body}\n${text.slice(j)}`;
}

/** The text between the two markers, as replaceBetween writes it. */
export function between(text: string, name: string): string {
  const start = `<!-- ${name}:start -->`;
  const i = text.indexOf(start);
  const j = text.indexOf(`<!-- ${name}:end -->`);
  if (i < 0 || j < i) throw new Error(`the markers of ${name} are missing`);
  return text.slice(i + start.length, j).replace(/^\n/, '').replace(/\n$/, '');
}

/** Drops the README's old configuration and audit tables: their headers and separators, and such rows wherever a merge left them. */
export function withoutOldTables(readme: string): string {
  const out: string[] = [];
  let inTable = false;
  for (const line of readme.split('\n')) {
    if (line === CONFIG_HEADER || line === AUDIT_HEADER) inTable = true;
    else if (inTable && !SEPARATOR.test(line)) inTable = false;
    if (!inTable && !CONFIG_ROW.test(line) && !AUDIT_ROW.test(line)) out.push(line);
  }
  return out.join('\n');
}

export interface Pages { 'README.md': string; 'docs/configuration.md': string; 'docs/operations.md': string }

/** The three files as `npm run docs` leaves them. */
export function regenerate(pages: Pages): { pages: Pages; missing: string[] } {
  const prose = auditProse(pages['docs/operations.md']);
  for (const [event, p] of auditProse(pages['README.md'])) prose.set(event, p);
  const { table, missing } = auditTable(prose);
  return {
    missing,
    pages: {
      'README.md': withoutOldTables(pages['README.md']),
      'docs/configuration.md': replaceBetween(pages['docs/configuration.md'], 'config-table', configTable()),
      'docs/operations.md': replaceBetween(pages['docs/operations.md'], 'audit-table', table),
    },
  };
}

export function readPages(root: URL = ROOT): Pages {
  const read = (path: string) => readFileSync(new URL(path, root), 'utf8');
  return { 'README.md': read('README.md'), 'docs/configuration.md': read('docs/configuration.md'), 'docs/operations.md': read('docs/operations.md') };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const check = process.argv.includes('--check');
  const before = readPages();
  const { pages, missing } = regenerate(before);
  const stale = (Object.keys(pages) as (keyof Pages)[]).filter((path) => pages[path] !== before[path]);
  if (check) {
    for (const path of stale) process.stderr.write(`docs: ${path} is out of date: run npm run docs\n`);
  } else {
    for (const path of stale) {
      writeFileSync(new URL(path, ROOT), pages[path]);
      process.stdout.write(`docs: rewrote ${path}\n`);
    }
  }
  for (const event of missing) {
    process.stderr.write(`docs: audit event ${event} has no row: write its "When" and "Fields" in docs/operations.md (the row marked TODO)\n`);
  }
  process.exitCode = missing.length > 0 || (check && stale.length > 0) ? 1 : 0;
}
