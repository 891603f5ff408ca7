// Builds the addon with cargo in the workspace's dev profile (`--release` for an optimised one) and copies it to
// wasmagent.linux-x64-gnu.node. Plain `cargo build -p` (not @napi-rs/cli, which always passes `--target` and so
// compiles every dependency a second time in its own directory) reuses what `cargo test --workspace` built.
import { spawnSync } from 'node:child_process'
import { copyFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const release = process.argv.includes('--release')
const args = ['build', '-p', 'wasmagent-node', '--message-format=json-render-diagnostics', ...(release ? ['--release'] : [])]
const cargo = spawnSync(process.env.CARGO ?? 'cargo', args, {
  cwd: here,
  stdio: ['ignore', 'pipe', 'inherit'],
  maxBuffer: 256 * 1024 * 1024,
  encoding: 'utf8',
})
if (cargo.status !== 0) {
  console.error(`cargo ${args.join(' ')} failed (${cargo.error ?? `exit ${cargo.status}`})`)
  process.exit(1)
}
const built = cargo.stdout
  .split('\n')
  .filter((line) => line.startsWith('{'))
  .map((line) => JSON.parse(line))
  .filter((m) => m.reason === 'compiler-artifact' && m.target?.name === 'wasmagent_node')
  .flatMap((m) => m.filenames)
  .find((file) => file.endsWith('.so'))
if (!built) {
  console.error('cargo built no wasmagent_node shared library')
  process.exit(1)
}
copyFileSync(built, join(here, 'wasmagent.linux-x64-gnu.node'))
console.log(`built ${join(here, 'wasmagent.linux-x64-gnu.node')} from ${built}`)
