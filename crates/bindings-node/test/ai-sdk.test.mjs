// The AI SDK runs sandboxedCodeTool() itself: a scripted model (the SDK's own test double) asks for the tool,
// generateText executes it and hands the result back to the model.
import assert from 'node:assert/strict'
import { test } from 'node:test'

import { generateText, stepCountIs } from 'ai'
import { MockLanguageModelV3 } from 'ai/test'

import { Sandbox, sandboxedCodeTool } from '../index.mjs'

const usage = {
  inputTokens: { total: 1, noCache: 1, cacheRead: 0, cacheWrite: 0 },
  outputTokens: { total: 1, text: 1, reasoning: 0 },
}

function scripted(calls) {
  const seen = []
  const model = new MockLanguageModelV3({
    doGenerate: async (options) => {
      const results = options.prompt.flatMap((m) => (m.role === 'tool' ? m.content : []))
      if (results.length === 0) {
        return {
          content: calls.map((input, i) => ({ type: 'tool-call', toolCallId: `call_${i}`, toolName: 'runCode', input: JSON.stringify(input) })),
          finishReason: { unified: 'tool-calls', raw: 'tool_calls' },
          usage,
          warnings: [],
        }
      }
      seen.push(...results.map((r) => r.output))
      return { content: [{ type: 'text', text: 'done' }], finishReason: { unified: 'stop', raw: 'stop' }, usage, warnings: [] }
    },
  })
  return { model, seen }
}

test('generateText executes sandboxedCodeTool and returns its result to the model', async () => {
  const runCode = sandboxedCodeTool({ sandbox: new Sandbox(), manifest: { cpuMs: 5000 } })
  const { model, seen } = scripted([
    { code: 'console.log(7 * 6)', language: 'javascript' },
    { code: "raise ValueError('bad input')", language: 'python' },
    { code: "fetch('http://127.0.0.1:9/').catch((e) => e.message)" },
  ])
  const result = await generateText({ model, tools: { runCode }, prompt: 'compute', stopWhen: stepCountIs(3) })
  assert.equal(result.text, 'done')
  const outputs = result.steps[0].toolResults.map((r) => r.output)
  assert.equal(outputs[0].outcome, 'ok')
  assert.equal(outputs[0].stdout, '42\n')
  assert.equal(outputs[1].error.kind, 'exception')
  assert.match(outputs[1].error.message, /bad input/)
  assert.equal(outputs[2].denials[0].capability, 'net.http')
  assert.equal(seen.length, 3)
})
