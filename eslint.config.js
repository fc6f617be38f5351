import js from '@eslint/js';
import tseslint from 'typescript-eslint';

// node:test's describe/it/test/… return promises the runner itself awaits: not floating.
const nodeTestCalls = {
  from: 'package',
  package: 'node:test',
  name: ['describe', 'it', 'test', 'suite', 'before', 'after', 'beforeEach', 'afterEach', 'only', 'skip', 'todo'],
};

export default tseslint.config(
  { ignores: ['node_modules/', 'coverage/', 'test/artifacts/'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/no-explicit-any': 'off',
      '@typescript-eslint/no-floating-promises': ['error', { allowForKnownSafeCalls: [nodeTestCalls] }],
      // An async function without an await is how a sync implementation meets an async contract (the Store
      // interface, oidc-provider's hooks, Koa handlers); dropping `async` would turn its throws into sync throws.
      '@typescript-eslint/require-await': 'off',
    },
  },
  // Tests read untyped JSON (response bodies, tokens, log lines) and assert its shape at run time; their
  // messages print such values as they are. The promise rules (floating, misused, await-thenable) stay on.
  {
    files: ['test/**/*.ts'],
    rules: {
      '@typescript-eslint/no-base-to-string': 'off',
      '@typescript-eslint/restrict-template-expressions': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
    },
  },
  // Plain JavaScript outside the TypeScript project: the browser scripts, the bin shim, this file.
  { files: ['views/*.js', 'bin/*.js', 'eslint.config.js'], ...tseslint.configs.disableTypeChecked },
  // The browser scripts (passkey ceremonies, the console's small helpers), served as is.
  { files: ['views/*.js'], languageOptions: { sourceType: 'script', globals: { window: 'readonly', document: 'readonly' } } },
);
