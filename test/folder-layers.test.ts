import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, test } from 'node:test';

/**
 * The rooms of src/ form layers: no folder imports a folder that imports it back, directly or through
 * others (a cycle means two rooms are one design in two places). Read from the import lines themselves,
 * type-only imports included: a type import ties the rooms together as much as a value does.
 */
const SRC = join(import.meta.dirname, '..', 'src');

/** Cycles known today, each to be removed by its owner; an entry that is no longer a cycle fails too. */
const KNOWN_FOLDER_CYCLES_TO_REMOVE: [string, string][] = [];

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? filesUnder(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []));
}

/** Top folder under src/ → the other top folders its files import (static, re-export and dynamic imports). */
function folderImports(): Map<string, Map<string, string[]>> {
  const graph = new Map<string, Map<string, string[]>>();
  for (const file of filesUnder(SRC)) {
    const [from, ...rest] = relative(SRC, file).split('/');
    if (rest.length === 0) continue; // src/app.ts and friends compose the rooms; they are no room
    const edges = graph.get(from!) ?? new Map<string, string[]>();
    graph.set(from!, edges);
    const source = readFileSync(file, 'utf8');
    for (const [, spec] of source.matchAll(/(?:\bfrom\s+|\bimport\s*\(\s*|^\s*import\s+)'(\.[^']+)'/gm)) {
      const target = relative(SRC, join(file, '..', spec!)).split('/');
      if (target.length < 2 || target[0] === '..' || target[0] === from) continue;
      edges.set(target[0]!, [...(edges.get(target[0]!) ?? []), relative(SRC, file)]);
    }
  }
  return graph;
}

/** Every cycle through folders (each found once, from its smallest name), as a path a → … → a. */
function cycles(graph: Map<string, Map<string, string[]>>, ignored: [string, string][]): string[][] {
  const skip = new Set(ignored.flatMap(([a, b]) => [`${a}>${b}`, `${b}>${a}`]));
  const found: string[][] = [];
  const walk = (start: string, at: string, path: string[]) => {
    for (const next of graph.get(at)?.keys() ?? []) {
      if (skip.has(`${at}>${next}`) || next < start) continue;
      if (next === start) found.push([...path, next]);
      else if (!path.includes(next)) walk(start, next, [...path, next]);
    }
  };
  for (const start of [...graph.keys()].sort()) walk(start, start, [start]);
  return found;
}

describe('folder layers under src/', () => {
  const graph = folderImports();

  test('no folder imports a folder that imports it back', () => {
    const found = cycles(graph, KNOWN_FOLDER_CYCLES_TO_REMOVE);
    const explain = found.map((c) => c.map((f, i) => (i < c.length - 1 ? `${f} (${graph.get(f)!.get(c[i + 1]!)![0]})` : f)).join(' → '));
    assert.deepEqual(explain, []);
  });

  test('each known cycle still exists (remove it from the list once it is gone)', () => {
    for (const [a, b] of KNOWN_FOLDER_CYCLES_TO_REMOVE) {
      assert.ok(graph.get(a)?.has(b) && graph.get(b)?.has(a), `${a} ↔ ${b} is no longer a cycle: remove it from KNOWN_FOLDER_CYCLES_TO_REMOVE`);
    }
  });

  test('the sign-in core sits below the protocol and the pages', () => {
    const signin = [...(graph.get('signin')?.keys() ?? [])];
    assert.ok(graph.has('signin'), 'src/signin exists');
    assert.deepEqual(signin.filter((f) => f === 'oidc' || f === 'interactions'), [], 'signin/ imports neither oidc/ nor interactions/');
    assert.equal(graph.get('oidc')?.has('interactions'), false, 'oidc/ does not import interactions/');
  });
});

test('security/ and admin/ import no concrete store: the Redis-or-memory choice is storage/ own (limiters.ts, open.ts)', () => {
  const concrete = /from\s+'[^']*storage\/(?:redis-store|memory-store)\.ts'|\binstanceof\s+(?:RedisStore|MemoryStore)\b/;
  const offenders = ['security', 'admin']
    .flatMap((room) => filesUnder(join(SRC, room)))
    .filter((file) => concrete.test(readFileSync(file, 'utf8')))
    .map((file) => relative(SRC, file));
  assert.deepEqual(offenders, []);
});
