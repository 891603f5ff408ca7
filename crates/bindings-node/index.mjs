// The ES module entry: the same objects as index.cjs.
import wasmagent from './index.cjs'

export const { Sandbox, Session, SandboxError, ManifestError, RunError, parseManifest, sandboxedCodeTool, describe, version } =
  wasmagent
export default wasmagent
