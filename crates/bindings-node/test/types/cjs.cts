// Compiled by test/types.test.mjs (tsc --strict): the CommonJS types.
import wasmagent = require('wasmagent')

async function main(): Promise<number> {
  const report: wasmagent.RunReport = await new wasmagent.Sandbox().run('6 * 7')
  // @ts-expect-error: outcome is a known string
  const wrong: 'finished' = report.outcome
  return report.usage.host_calls + String(wrong).length
}
main()
