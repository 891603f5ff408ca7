import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { test } from 'node:test'

import { ManifestError, RunError, Sandbox, SandboxError, parseManifest, version } from '../index.mjs'

// One sandbox for the file: its engines compile once. Tools are added before its first run.
const sandbox = new Sandbox()
let loopRan = false
sandbox
  .tool('add', ({ a, b }) => a + b, { description: 'Adds a and b.' })
  .tool('lookup', async ({ key }) => {
    await new Promise((resolve) => setTimeout(resolve, 5))
    return { key, found: true }
  })
  .tool('fail', async () => {
    throw new Error('no such account')
  })
  // Answers only once the event loop has run other work: a blocked loop would never let it.
  .tool('loop_ran', () => loopRan)
const TOOLS = { extraCapabilities: ['tool:*'], cpuMs: 10000 }

// (module (func (export "_start"))) and the same with `unreachable`.
const EMPTY = Buffer.from('0061736d0100000001040160000003020100070a01065f737461727400000a040102000b', 'hex')
const TRAP = Buffer.from('0061736d0100000001040160000003020100070a01065f737461727400000a05010300000b', 'hex')

test('the version is the workspace version and the package version', () => {
  const cargo = readFileSync(new URL('../../../Cargo.toml', import.meta.url), 'utf8')
  const workspace = cargo.match(/\[workspace\.package\][^[]*?version = "([^"]+)"/)[1]
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'))
  assert.equal(version, workspace)
  assert.equal(pkg.version, workspace)
})

test('a JavaScript run returns a typed report', async () => {
  const report = await sandbox.run("console.log('hi'); 6 * 7", { language: 'javascript' })
  assert.equal(report.schema, 'wasmagent.run/v1')
  assert.deepEqual([report.kernel, report.outcome, report.stdout, report.value], ['js', 'ok', 'hi\n', 42])
  assert.ok(report.usage.wall_ms > 0)
})

test('a Python run reads stdin', async () => {
  const report = await sandbox.run('import sys\nprint(sys.stdin.read().upper())', { language: 'python', stdin: 'from node' })
  assert.deepEqual([report.kernel, report.stdout], ['python', 'FROM NODE\n'])
})

test('WebAssembly runs and traps', async () => {
  assert.ok(['ok', 'exit'].includes((await sandbox.runWasm(EMPTY)).outcome))
  await assert.rejects(sandbox.runWasm(TRAP), (e) => e instanceof RunError && e.kind === 'trap' && e.report.outcome === 'error')
  await assert.rejects(sandbox.runWasm(Buffer.from('not wasm')), (e) => e.kind === 'invalid_code' && e.report === null)
})

test('an exception rejects with RunError carrying the report, or comes back with check: false', async () => {
  await assert.rejects(sandbox.run("throw new TypeError('boom')"), (e) => {
    assert.ok(e instanceof RunError && e instanceof SandboxError)
    assert.equal(e.kind, 'exception')
    assert.match(e.report.error.message, /boom/)
    return true
  })
  const report = await sandbox.run("throw new TypeError('boom')", { check: false })
  assert.equal(report.error.kind, 'exception')
})

test('camelCase and snake_case manifests mean the same; bad ones throw ManifestError', async () => {
  assert.deepEqual(
    parseManifest({ cpuMs: 1500, allowedHosts: ['api.example.com'], maxHostCalls: 3 }),
    parseManifest('cpu_ms = 1500\nallowed_hosts = ["api.example.com"]\nmax_host_calls = 3'),
  )
  assert.throws(() => parseManifest({ cpuMs: 1, noSuchField: true }), (e) => e instanceof ManifestError && /noSuchField/.test(e.message))
  await assert.rejects(sandbox.run('1', { manifest: { cpuMs: 1e12 } }), (e) => e instanceof ManifestError && e.field === 'cpu_ms')
})

test('a denial names what was refused and why', async () => {
  const report = await sandbox.run(
    "fetch('http://127.0.0.1:9/').then(() => 'reached', (e) => 'refused: ' + e.message)",
    { manifest: { cpuMs: 10000 } },
  )
  assert.match(report.value, /^refused: /)
  assert.equal(report.denials[0].capability, 'net.http')
  assert.equal(report.denials[0].target, 'http://127.0.0.1:9/')
  assert.match(report.denials[0].reason, /allowed_hosts/)
})

test('a timeout stops the guest', async () => {
  const started = performance.now()
  await assert.rejects(sandbox.run('while (true) {}', { manifest: { cpuMs: 300 } }), (e) => e.kind === 'timeout' && e.report.outcome === 'timeout')
  assert.ok(performance.now() - started < 10000)
})

test('guests call async JavaScript tools', async () => {
  const js = await sandbox.run(
    "const found = tools.lookup({key: 'k'}); let err; try { tools.fail({}) } catch (e) { err = String(e) }\n" +
      '[tools.add({a: 2, b: 40}), found.found, err]',
    { manifest: TOOLS },
  )
  assert.equal(js.value[0], 42)
  assert.equal(js.value[1], true)
  assert.match(js.value[2], /no such account/)
  assert.deepEqual(js.tool_calls.map((c) => c.name), ['lookup', 'fail', 'add'])
  const py = await sandbox.run("from wasmagent import tools\nprint(tools.add(a=1, b=2), tools.lookup(key='x')['key'])", {
    language: 'python',
    manifest: TOOLS,
  })
  assert.equal(py.stdout, '3 x\n')
})

test('runs do not block the event loop', async () => {
  loopRan = false
  const run = sandbox.run("let seen = false; for (let i = 0; i < 2000 && !seen; i++) { seen = tools.loop_ran({}) } seen", {
    manifest: TOOLS,
  })
  await new Promise((resolve) => setImmediate(resolve))
  loopRan = true
  const report = await run
  assert.equal(report.value, true)
})

test('many concurrent runs from promises', async () => {
  const runs = Array.from({ length: 24 }, (_, i) =>
    i % 3 === 0
      ? sandbox.run(`${i} * 3`, { language: 'python' })
      : sandbox.run(`tools.add({a: ${i}, b: ${i}})`, { manifest: TOOLS }),
  )
  const values = (await Promise.all(runs)).map((r) => r.value)
  assert.deepEqual(values, Array.from({ length: 24 }, (_, i) => (i % 3 === 0 ? i * 3 : i * 2)))
})

test('tool registration is checked', () => {
  const box = new Sandbox()
  box.tool('ok_name', () => 1)
  assert.throws(() => box.tool('ok_name', () => 2), /already registered/)
  assert.throws(() => box.tool('bad name', () => 2), /invalid tool name/)
  assert.deepEqual(box.toolNames, ['ok_name'])
})

test('sessions keep state until closed', async () => {
  const session = await sandbox.session('javascript', { manifest: { cpuMs: 5000 } })
  await session.run('globalThis.n = 41')
  const report = await session.run('n + 1')
  assert.equal(report.value, 42)
  assert.equal(report.session_id, session.id)
  session.close()
  await assert.rejects(session.run('n'), (e) => e instanceof RunError && e.kind === 'session_ended' && e.report === null)
  const py = await sandbox.session('python')
  await py.run('x = 20')
  assert.equal((await py.run('x * 2')).value, 40)
  py.close()
  await assert.rejects(sandbox.session('ruby'), TypeError)
})

test('runs past maxInFlight are refused at once, saying why', async () => {
  let release
  const released = new Promise((resolve) => {
    release = resolve
  })
  let entered
  const inTool = new Promise((resolve) => {
    entered = resolve
  })
  const box = new Sandbox({ maxInFlight: 1 }).tool('hold', async () => {
    entered()
    await released
    return 'held'
  })
  const first = box.run('tools.hold({})', { manifest: { extraCapabilities: ['tool:hold'], cpuMs: 20000 } })
  await inTool
  await assert.rejects(box.run('1'), (e) => e instanceof RunError && e.kind === 'unavailable' && /the most is 1/.test(e.message))
  release()
  assert.equal((await first).value, 'held')
  assert.equal((await box.run('2')).value, 2)
})
