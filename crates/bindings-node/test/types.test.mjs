// The TypeScript types (index.d.cts, index.d.mts) compile under --strict as users import them, from ES modules and
// from CommonJS, and refuse what the API refuses (the checked files hold @ts-expect-error lines).
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { createRequire } from 'node:module'
import { test } from 'node:test'

const require = createRequire(import.meta.url)

test('the TypeScript types compile for ES module and CommonJS users', () => {
  const tsc = require.resolve('typescript/bin/tsc')
  const project = new URL('types/tsconfig.json', import.meta.url).pathname
  const run = spawnSync(process.execPath, [tsc, '-p', project], { encoding: 'utf8' })
  assert.equal(run.status, 0, run.stdout + run.stderr)
})
