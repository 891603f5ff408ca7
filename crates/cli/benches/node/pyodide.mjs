// Pyodide in Node, measured beside wasmagent's python kernel: the time to load it, then `1+1` and the CPU-bound
// script on the loaded interpreter (Pyodide shares one interpreter across runs; wasmagent starts a fresh one each
// time). Prints one JSON line.
import { loadPyodide } from "pyodide";

const CPU = process.argv[2];
const runs = Number(process.argv[3] ?? 2000);
const p50 = (xs) => xs.sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];
const ms = (t) => Number(process.hrtime.bigint() - t) / 1e6;

let t = process.hrtime.bigint();
const pyodide = await loadPyodide();
const load_ms = ms(t);

for (let i = 0; i < 200; i++) pyodide.runPython("1+1");
const trivial = [];
for (let i = 0; i < runs; i++) {
  t = process.hrtime.bigint();
  pyodide.runPython("1+1");
  trivial.push(ms(t));
}
const cpu = [];
for (let i = 0; i < 5; i++) {
  t = process.hrtime.bigint();
  pyodide.runPython(CPU);
  cpu.push(ms(t));
}
console.log(JSON.stringify({ load_ms, trivial_p50_ms: p50(trivial), cpu_p50_ms: p50(cpu), node: process.version }));
