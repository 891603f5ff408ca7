// Compiled by test/types.test.mjs (tsc --strict): the ES module types as a TypeScript user writes against them.
import wasmagent, { ManifestError, RunError, Sandbox, sandboxedCodeTool, type Outcome, type RunReport } from 'wasmagent'

const sandbox = new Sandbox({ poolSlots: 4 })
sandbox.tool('add', async ({ a, b }: { a: number; b: number }) => a + b, { description: 'Adds.' })
const report: RunReport = await sandbox.run('1 + 1', { language: 'javascript', manifest: { cpuMs: 100, allowedHosts: [] } })
const outcome: Outcome = report.outcome
const wall: number = report.usage.wall_ms
const denied: string[] = report.denials.map((d) => `${d.capability} ${d.target}: ${d.reason}`)
try {
  await sandbox.runWasm(new Uint8Array([0]), { manifest: 'cpu_ms = 100' })
} catch (e) {
  if (e instanceof RunError) console.log(e.kind, e.report?.outcome)
  if (e instanceof ManifestError) console.log(e.field)
}
const session = await sandbox.session('python', { manifest: { cpuMs: 100 } })
const id: string = session.id
const again: RunReport = await session.run('1', { check: false })
session.close()
console.log(id, again.value)
const tool = sandboxedCodeTool({ sandbox, manifest: { cpuMs: 1000 } })
console.log(outcome, wall, denied, tool.description, wasmagent.version)
// @ts-expect-error: language is javascript or python
await sandbox.run('1', { language: 'ruby' })
