// Types of the ES module entry (index.mjs): the same objects as index.cjs, and all of them as the default export.
export * from './index.cjs'
import * as wasmagent from './index.cjs'
export default wasmagent
