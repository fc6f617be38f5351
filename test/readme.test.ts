import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { between, readPages, regenerate } from '../scripts/docs.ts';
import { configDocs, loadConfig } from '../src/config.ts';
import { AUDIT_EVENTS, auditLevel } from '../src/observability/audit.ts';

const ROOT = new URL('../', import.meta.url);
const read = (path: string) => readFileSync(new URL(path, ROOT), 'utf8');
const readme = read('README.md');
const docPages = readdirSync(new URL('docs/', ROOT)).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`);

test('the configuration table of docs/configuration.md matches the schema: every variable, its default and meaning', () => {
  const rows = new Map<string, { def: string; meaning: string }>();
  for (const line of between(read('docs/configuration.md'), 'config-table').split('\n')) {
    const m = /^\| `([A-Z_]+)` \| (.+?) \| (.+) \|$/.exec(line);
    if (m) rows.set(m[1]!, { def: m[2]!, meaning: m[3]! });
  }
  assert.deepEqual([...rows.keys()].sort(), Object.keys(configDocs).sort());
  const defaults = loadConfig({}) as Record<string, unknown>;
  for (const [name, row] of rows) {
    assert.equal(row.meaning, configDocs[name], `meaning of ${name}`);
    const derived: Record<string, string> = { ISSUER: '`http://localhost:PORT`', WEBAUTHN_RP_ID: "the issuer's host", WEBAUTHN_ORIGINS: "the issuer's origin" };
    const expected = derived[name] ?? (defaults[name] === undefined ? 'unset' : `\`${String(defaults[name])}\``);
    assert.equal(row.def, expected, `default of ${name}`);
  }
});

test('the audit events table of docs/operations.md lists every event of AUDIT_EVENTS once, with its level and its prose', () => {
  const rows = [...between(read('docs/operations.md'), 'audit-table').matchAll(/^\| `([a-z_]+)` \| (info|warn|error|fatal) \| (.+?) \| (.+) \|$/gm)]
    .map((m) => ({ event: m[1]!, level: m[2]!, when: m[3]!, fields: m[4]! }));
  assert.deepEqual(rows.map((r) => r.event), [...AUDIT_EVENTS]);
  for (const { event, level, when, fields } of rows) {
    assert.equal(level, auditLevel(event as (typeof AUDIT_EVENTS)[number]), `level of ${event}`);
    assert.ok(when !== 'TODO' && fields !== 'TODO', `${event} has its "When" and "Fields" written`);
  }
});

test('npm run docs would change nothing: the generated tables are what the code says', () => {
  const pages = readPages();
  const { pages: regenerated, missing } = regenerate(pages);
  assert.deepEqual(missing, []);
  for (const path of Object.keys(pages) as (keyof typeof pages)[]) assert.equal(regenerated[path], pages[path], `${path} is stale: run npm run docs`);
});

test('npm run docs moves audit rows merged into the README to docs/operations.md, and drops the README\'s old tables', () => {
  const pages = readPages();
  const row = '| `token_issued` | info | A new description from another branch | `clientId` |';
  const merged = `${pages['README.md']}\n## Audit events\n\n| \`event\` | Level | When | Fields |\n|---|---|---|---|\n${row}\n\n| Variable | Default | Meaning |\n|---|---|---|\n| \`PORT\` | \`3000\` | TCP port to listen on. |\n\nAfter.\n<<<<<<< HEAD\n=======\n| \`COOKIE_KEYS\` | unset | A row a merge left behind. |\n>>>>>>> w-other\n`;
  const { pages: out, missing } = regenerate({ ...pages, 'README.md': merged });
  assert.deepEqual(missing, []);
  assert.ok(between(out['docs/operations.md'], 'audit-table').split('\n').includes(row));
  assert.ok(out['README.md'].startsWith(pages['README.md']) && out['README.md'].includes('After.\n'), 'the rest of the README is kept');
  for (const gone of [row, '| `event` | Level |', '| Variable | Default |', '| `PORT` |', '| `COOKIE_KEYS` |']) assert.ok(!out['README.md'].includes(gone), `README keeps ${gone}`);
});

test('the README shows the two commands', () => {
  assert.match(readme, /npm ci && npm start/);
  assert.match(readme, /npm test/);
});

test('the README is a front door: at most 12 KB', () => {
  const size = statSync(new URL('README.md', ROOT)).size;
  assert.ok(size <= 12_288, `README.md is ${size} bytes; move detail to a docs/ page`);
});

test('every docs/ page is linked from the README', () => {
  assert.ok(docPages.length >= 13, `docs pages: ${docPages.join(', ')}`);
  const targets = new Set(links(readme).map((l) => l.split('#')[0]));
  for (const page of docPages) assert.ok(targets.has(page), `README.md links ${page}`);
});

test('every relative link of README.md and docs/*.md names a file that exists, and every #anchor a heading of it', () => {
  for (const page of ['README.md', ...docPages]) {
    const base = new URL(page, ROOT);
    for (const link of links(read(page))) {
      if (/^[a-z][a-z0-9+.-]*:/i.test(link)) continue; // https:, mailto:
      const [path, anchor] = link.split('#') as [string, string | undefined];
      const target = path ? new URL(path, base) : base;
      assert.ok(existsSync(target), `${page}: ${link} names a file that does not exist`);
      if (anchor !== undefined && target.pathname.endsWith('.md')) {
        assert.ok(headingAnchors(readFileSync(target, 'utf8')).has(anchor), `${page}: ${link}: no heading with anchor #${anchor} in ${fileURLToPath(target)}`);
      }
    }
  }
});

/** The targets of the Markdown links and images of a page, outside code. */
function links(markdown: string): string[] {
  const prose = markdown.replace(/^```[\s\S]*?^```/gm, '').replace(/`[^`\n]*`/g, '');
  return [...prose.matchAll(/\]\(([^)\s]+)\)/g)].map((m) => m[1]!);
}

/** The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces to hyphens, repeats numbered. */
function headingAnchors(markdown: string): Set<string> {
  const anchors = new Set<string>();
  const seen = new Map<string, number>();
  for (const m of markdown.replace(/^```[\s\S]*?^```/gm, '').matchAll(/^#{1,6} +(.+?) *#*$/gm)) {
    const slug = m[1]!.toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, '').replace(/ /g, '-');
    const n = seen.get(slug) ?? 0;
    seen.set(slug, n + 1);
    anchors.add(n === 0 ? slug : `${slug}-${n}`);
  }
  return anchors;
}
