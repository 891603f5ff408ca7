// wasmagent's own Python engine (guests/dist/python.wasm, the pre-initialised CPython core module the python kernel
// runs) in Node: V8 compiles and runs the same CPython bytes that wasmtime runs in the kernel, through Node's own
// WASI preview 1. Beside Pyodide (another CPython build, same V8) and the kernel (same build, wasmtime), it separates
// what the runtime costs from what the CPython build costs. Prints one JSON line.
//
// Only the CPU-bound script is measured, on one instance: a first run whose answer is checked (it also lets V8 tier
// up the interpreter, as pyodide.mjs's `1+1` runs do for Pyodide), then five runs, median (as in pyodide.mjs).
// This is a reference, not a sandbox: the guest gets no preopened directories, an empty environment, and host tool,
// HTTP and artifact imports that refuse every call.
import { readFile } from "node:fs/promises";
import { WASI } from "node:wasi";

const CPU = process.argv[2];
const p50 = (xs) => xs.sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];
const ms = (t) => Number(process.hrtime.bigint() - t) / 1e6;

const bytes = await readFile(new URL("../../../../guests/dist/python.wasm", import.meta.url));
const wasi = new WASI({ version: "preview1", args: ["bench.py"], env: {}, preopens: {}, returnOnExit: true });
let answer = null;
let memory;
const refuse = () => -1; // an error of length 1; the guest's next `tool_response` finds nothing pending
const imports = {
  wasi_snapshot_preview1: wasi.wasiImport,
  wasmagent: {
    result: (ptr, len) => {
      answer = Buffer.from(memory.buffer, ptr, len).toString("utf8");
    },
    tool_call: refuse,
    http_request: refuse,
    artifact: refuse,
    tool_response: () => -1,
  },
};
const { instance } = await WebAssembly.instantiate(bytes, imports);
memory = instance.exports.memory;
wasi.initialize(instance);

const run = (code) => {
  const request = Buffer.from(JSON.stringify({ code, name: "bench.py", args: [], env: {} }));
  const ptr = instance.exports.wasmagent_alloc(request.length);
  Buffer.from(memory.buffer, ptr, request.length).set(request);
  answer = null;
  instance.exports.wasmagent_run(ptr, request.length);
  return answer;
};

const first = run(CPU);
if (!first?.startsWith('{"value":')) throw new Error(`the engine did not run the script: ${first}`);
const cpu = [];
for (let i = 0; i < 5; i++) {
  const t = process.hrtime.bigint();
  run(CPU);
  cpu.push(ms(t));
}
console.log(JSON.stringify({ cpu_p50_ms: p50(cpu), node: process.version }));
