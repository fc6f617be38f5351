import { basename } from 'node:path';
import type { TestEvent } from 'node:test/reporters';
import { REFUSED } from './op.ts';

/**
 * A node:test reporter that writes docs/conformance.md (`npm run conformance`): one table per test
 * plan (a file's describe), one row per module (a test named `oidcc-…`): pass, fail or refused as
 * documented (the test's diagnostic starts with REFUSED), and the test's note.
 */
interface Row {
  module: string;
  file: string;
  line?: number;
  nesting: number;
  passed: boolean;
  notes: string[];
  error?: string;
}

type Located = { name?: string; file?: string; line?: number; nesting: number };

export default async function* conformanceReport(source: AsyncIterable<TestEvent>): AsyncGenerator<string> {
  const rows: Row[] = [];
  const plans = new Map<string, string>();
  const lastByFile = new Map<string, Row>();
  for await (const event of source) {
    if (event.type === 'test:pass' || event.type === 'test:fail') {
      const data = event.data as Located & { details: { type?: string; error?: { cause?: unknown; message?: string } } };
      const file = data.file ?? '';
      if (data.details.type === 'suite') {
        plans.set(file, data.name ?? basename(file));
      } else if (data.name?.startsWith('oidcc-')) {
        const cause = data.details.error?.cause as { message?: string } | undefined;
        const row: Row = { module: data.name, file, line: data.line, nesting: data.nesting, passed: event.type === 'test:pass', notes: [] };
        if (!row.passed) row.error = firstLine(cause?.message ?? data.details.error?.message ?? 'failed');
        rows.push(row);
        lastByFile.set(file, row);
      }
    } else if (event.type === 'test:diagnostic') {
      // A test's diagnostics follow its result, at its location.
      const data = event.data as Located & { message: string };
      const row = lastByFile.get(data.file ?? '');
      if (row && row.line === data.line && row.nesting === data.nesting) row.notes.push(data.message);
    }
  }

  const date = new Date().toISOString().slice(0, 10);
  const out = [
    '# Conformance',
    '',
    'The checks of the OpenID Foundation conformance suite that apply to a code-flow provider, run in the',
    'repository (`test/conformance/`): one test per module, named as the suite names it. Written by',
    `\`npm run conformance\` on ${date}. Do not edit by hand.`,
    '',
  ];
  const counts = { pass: 0, fail: 0, refused: 0 };
  for (const file of [...new Set(rows.map((r) => r.file))].sort()) {
    out.push(`## ${plans.get(file) ?? basename(file)}`, '', '| Module | Result | Note |', '|---|---|---|');
    for (const row of rows.filter((r) => r.file === file)) {
      const refused = row.notes.find((n) => n.startsWith(REFUSED));
      const result = !row.passed ? 'fail' : refused ? 'refused as documented' : 'pass';
      counts[!row.passed ? 'fail' : refused ? 'refused' : 'pass'] += 1;
      const note = row.error ?? (refused ? refused.slice(REFUSED.length) : row.notes.join('; '));
      out.push(`| \`${row.module}\` | ${result} | ${cell(note)} |`);
    }
    out.push('');
  }
  out.push(`${rows.length} modules: ${counts.pass} pass, ${counts.refused} refused as documented, ${counts.fail} fail.`, '');
  yield out.join('\n');
}

/** An assertion's message on one line (its diff included), short enough for a table cell. */
function firstLine(text: string): string {
  return text.split('\n').map((l) => l.trim()).filter(Boolean).join(' ').slice(0, 200);
}

function cell(text: string): string {
  return text.replaceAll('|', '\\|').replaceAll('\n', ' ');
}
