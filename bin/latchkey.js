#!/usr/bin/env node
// The installed `latchkey` command: runs src/cli/main.ts on Node 24 (which runs TypeScript directly).
// Prefers the project's own Node 24 (the `node` dev dependency), else the Node running this shim.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import process from 'node:process';
import { URL, fileURLToPath } from 'node:url';

const root = new URL('../', import.meta.url);
const bundled = fileURLToPath(new URL('node_modules/node/bin/node', root));
const node = existsSync(bundled) ? bundled : process.execPath;
const main = fileURLToPath(new URL('src/cli/main.ts', root));
const result = spawnSync(node, [main, ...process.argv.slice(2)], { stdio: 'inherit' });
if (result.error) {
  process.stderr.write(`latchkey: cannot start ${node}: ${result.error.message}\n`);
  process.exit(1);
}
process.exit(result.status ?? 1);
