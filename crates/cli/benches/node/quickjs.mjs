// quickjs-emscripten in Node, measured the way wasmagent's benchmark measures its js kernel:
// a new runtime + context + eval of `1+1` per run, and the CPU-bound script. Prints one JSON line.
import { getQuickJS } from "quickjs-emscripten";

const CPU = process.argv[2];
const runs = Number(process.argv[3] ?? 2000);
const QuickJS = await getQuickJS();
const p50 = (xs) => xs.sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];

function fresh(code) {
  const runtime = QuickJS.newRuntime();
  const context = runtime.newContext();
  const result = context.evalCode(code);
  const value = context.dump(context.unwrapResult(result));
  context.dispose();
  runtime.dispose();
  return value;
}

for (let i = 0; i < 200; i++) fresh("1+1");
const trivial = [];
for (let i = 0; i < runs; i++) {
  const t = process.hrtime.bigint();
  fresh("1+1");
  trivial.push(Number(process.hrtime.bigint() - t) / 1e6);
}
const cpu = [];
for (let i = 0; i < 5; i++) {
  const t = process.hrtime.bigint();
  fresh(CPU);
  cpu.push(Number(process.hrtime.bigint() - t) / 1e6);
}
console.log(JSON.stringify({ trivial_p50_ms: p50(trivial), cpu_p50_ms: p50(cpu), node: process.version }));
