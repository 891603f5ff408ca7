const assert = require('node:assert/strict')
const { test } = require('node:test')

const wasmagent = require('..')

test('CommonJS require gives the same API as the ES module', async () => {
  const esm = await import('../index.mjs')
  assert.equal(esm.Sandbox, wasmagent.Sandbox)
  assert.equal(esm.default, wasmagent)
  const report = await new wasmagent.Sandbox().run('[1, 2].map((x) => x * 2)')
  assert.deepEqual(report.value, [2, 4])
})
