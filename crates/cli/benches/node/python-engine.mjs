// wasmagent's own Python engine (guests/dist/python.wasm, the componentize-py component the python kernel runs) in
// Node: jco transpiles the component into its core modules and JavaScript glue, and V8 compiles and runs the same
// CPython bytes that wasmtime runs in the kernel. Beside Pyodide (another CPython build, same V8) and the kernel
// (same build, wasmtime), it separates what the runtime costs from what the CPython build costs. Prints one JSON line.
//
// Only the CPU-bound script is measured, on one instance: a first run whose answer is checked (it also lets V8 tier
// up the interpreter, as pyodide.mjs's `1+1` runs do for Pyodide), then five runs, median (as in pyodide.mjs).
// This is a reference, not a sandbox: the guest gets no preopened directories, an empty environment, and host tool
// and HTTP imports that refuse every call.
import { transpile } from "@bytecodealliance/jco-transpile";
import * as cli from "@bytecodealliance/preview2-shim/cli";
import * as clocks from "@bytecodealliance/preview2-shim/clocks";
import * as filesystem from "@bytecodealliance/preview2-shim/filesystem";
import * as io from "@bytecodealliance/preview2-shim/io";
import * as random from "@bytecodealliance/preview2-shim/random";
import * as sockets from "@bytecodealliance/preview2-shim/sockets";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import v8 from "node:v8";

const CPU = process.argv[2];
const p50 = (xs) => xs.sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];
const ms = (t) => Number(process.hrtime.bigint() - t) / 1e6;

// componentize-py links CPython as position-independent code, whose globals are initialised with extended constant
// expressions: shipped in V8 12, behind this flag in Node 20's V8 11.
v8.setFlagsFromString("--experimental-wasm-extended-const");

const engine = fileURLToPath(new URL("../../../../guests/dist/python.wasm", import.meta.url));
const { files, imports } = await transpile(engine, { name: "python", instantiation: "async" });
const out = await mkdtemp(join(tmpdir(), "wasmagent-python-engine-"));
let python;
try {
  await writeFile(join(out, "python.js"), files["python.js"]);
  python = await import(pathToFileURL(join(out, "python.js")));
} finally {
  await rm(out, { recursive: true, force: true });
}

filesystem._setPreopens({});
cli._setEnv({});
const shims = { cli, clocks, filesystem, io, random, sockets };
const camel = (name) => name.replace(/-(\w)/g, (_, c) => c.toUpperCase());
const refuse = () => {
  throw new Error("not available in this reference");
};
const importObject = {};
for (const name of imports) {
  const wasi = name.match(/^wasi:(\w+)\/([\w-]+)/);
  importObject[name] = wasi ? shims[wasi[1]][camel(wasi[2])] : { callTool: refuse, httpFetch: refuse };
}
const instance = await python.instantiate((file) => WebAssembly.compile(files[file]), importObject);

const answer = instance.run(JSON.stringify({ code: CPU }));
if (!answer.startsWith('{"value":')) throw new Error(`the engine did not run the script: ${answer}`);
const cpu = [];
for (let i = 0; i < 5; i++) {
  const t = process.hrtime.bigint();
  instance.run(JSON.stringify({ code: CPU }));
  cpu.push(ms(t));
}
console.log(JSON.stringify({ cpu_p50_ms: p50(cpu), node: process.version }));
