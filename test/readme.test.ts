import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { configDocs, loadConfig } from '../src/config.ts';
import { AUDIT_EVENTS, auditLevel } from '../src/observability/audit.ts';

const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');

test('the README configuration table matches the schema: every variable, its default and meaning', () => {
  const rows = new Map<string, { def: string; meaning: string }>();
  for (const line of readme.split('\n')) {
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

test('the README shows the two commands', () => {
  assert.match(readme, /npm ci && npm start/);
  assert.match(readme, /npm test/);
});

test('the README audit events table lists every event of AUDIT_EVENTS once, with its level', () => {
  const rows = [...readme.matchAll(/^\| `([a-z_]+)` \| (info|warn|error|fatal) \| (.+) \|$/gm)].map((m) => ({ event: m[1]!, level: m[2]! }));
  assert.deepEqual(rows.map((r) => r.event), [...AUDIT_EVENTS]);
  for (const { event, level } of rows) assert.equal(level, auditLevel(event as (typeof AUDIT_EVENTS)[number]), `level of ${event}`);
});
