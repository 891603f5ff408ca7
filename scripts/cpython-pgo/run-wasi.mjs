// Runs a WASI preview 1 command in Node's `node:wasi` (scripts/build-cpython-wasi.sh uses it for the PGO training
// run): node run-wasi.mjs <module.wasm> <argv0> [args...], with the preopened directories (guest path -> host path)
// and the environment as JSON in WASI_PREOPENS and WASI_ENV. Exits with the module's exit code.
import { readFileSync } from 'node:fs';
import { WASI } from 'node:wasi';

const [modulePath, argv0, ...args] = process.argv.slice(2);
const wasi = new WASI({
  version: 'preview1',
  args: [argv0, ...args],
  env: JSON.parse(process.env.WASI_ENV || '{}'),
  preopens: JSON.parse(process.env.WASI_PREOPENS || '{}'),
  returnOnExit: true,
});
const instance = await WebAssembly.instantiate(await WebAssembly.compile(readFileSync(modulePath)), wasi.getImportObject());
process.exitCode = wasi.start(instance);
