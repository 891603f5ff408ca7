// Types of the wasmagent package: index.cjs (and, through index.d.mts, index.mjs).

/** A capability manifest: snake_case or wasmagent-js camelCase names (`allowedHosts`, `cpuMs`, ...). */
export interface Manifest {
  allowed_read_paths?: string[]
  allowedReadPaths?: string[]
  allowed_write_paths?: string[]
  allowedWritePaths?: string[]
  allowed_hosts?: string[]
  allowedHosts?: string[]
  env?: Record<string, string>
  cpu_ms?: number
  cpuMs?: number
  fuel?: number
  memory_limit_bytes?: number
  memoryLimitBytes?: number
  max_output_bytes?: number
  maxOutputBytes?: number
  max_host_calls?: number
  maxHostCalls?: number
  extra_capabilities?: string[]
  extraCapabilities?: string[]
  [field: string]: unknown
}

export type Outcome = 'ok' | 'error' | 'exit' | 'timeout' | 'memory_limit' | 'fuel_exhausted' | 'output_limit'

export type ErrorKind =
  | 'trap'
  | 'exception'
  | 'serialization'
  | 'timeout'
  | 'memory_limit'
  | 'fuel_exhausted'
  | 'output_limit'
  | 'signature'
  | 'internal'
  | 'remote_unavailable'
  | 'rate_limited'

export interface ErrorInfo {
  kind: ErrorKind
  message: string
}

/** One access the host refused: what kind (`fs.read`, `net.http`, `tool`, ...), of what, and why. */
export interface Denial {
  capability: string
  target: string
  reason: string
}

export interface ToolCall {
  name: string
  args_digest: string
  outcome: string
  duration_ms: number
  error?: string
}

export interface HttpExchange {
  method: string
  url: string
  outcome: string
  status?: number
  redirects: number
  response_bytes: number
  duration_ms: number
  error?: string
}

export interface Artifact {
  kind: string
  mime: string
  title?: string
  text?: string
  bytes: number
}

export interface Usage {
  wall_ms: number
  fuel_consumed: number
  memory_peak_bytes: number
  host_calls: number
  stdout_bytes: number
  stderr_bytes: number
  code_cache: string
}

/** The run report (schema `wasmagent.run/v1`), as every wasmagent front end returns it. */
export interface RunReport {
  schema: 'wasmagent.run/v1'
  kernel: string
  outcome: Outcome
  value: unknown
  stdout: string
  stderr: string
  exit_code?: number | null
  error?: ErrorInfo | null
  denials: Denial[]
  tool_calls: ToolCall[]
  http_requests: HttpExchange[]
  artifacts: Artifact[]
  usage: Usage
  manifest: Record<string, unknown>
  manifest_digest: string
  code_digest: string
  signer_key_id?: string | null
  [field: string]: unknown
}

export interface RunOptions {
  /** Deny-all when absent; TOML text or an object. */
  manifest?: Manifest | string
  stdin?: string | Uint8Array
  args?: string[]
  /** Reject with RunError when the run did not succeed (default true). */
  check?: boolean
  /** Where relative manifest paths start (default: the current directory). */
  baseDir?: string
}

export interface SandboxOptions {
  /** Where compiled code is kept between processes (default: memory only). */
  cacheDir?: string
  /** How many guests may be instantiated at once (default 128). */
  poolSlots?: number
  /** How many runs may be in flight at once, each on a thread of its own (default 256); past it a run rejects at
   * once with RunError kind `unavailable`. */
  maxInFlight?: number
}

export interface ToolOptions {
  description?: string
  /** JSON Schema of the arguments object. */
  schema?: Record<string, unknown>
}

export declare class Sandbox {
  constructor(options?: SandboxOptions)
  /** Registers a host tool; guests see it only where the manifest grants `tool:NAME`. */
  tool(name: string, handler: (args: any) => unknown | Promise<unknown>, options?: ToolOptions): this
  readonly toolNames: string[]
  run(code: string, options?: RunOptions & { language?: 'javascript' | 'python' }): Promise<RunReport>
  runWasm(module: Uint8Array, options?: RunOptions): Promise<RunReport>
  /** Opens a session: one live sandbox whose state carries over between runs. */
  session(language?: 'javascript' | 'python', options?: { manifest?: Manifest | string; baseDir?: string }): Promise<Session>
}

/** A live sandbox kept between runs. */
export declare class Session {
  readonly id: string
  run(code: string, options?: { stdin?: string | Uint8Array; check?: boolean }): Promise<RunReport>
  close(): void
}

export declare class SandboxError extends Error {}

export declare class ManifestError extends SandboxError {
  readonly field: string | null
}

export declare class RunError extends SandboxError {
  /** The report's error kind, or `invalid_code`, `unsupported`, `unavailable` when the run could not start. */
  readonly kind: ErrorKind | 'invalid_code' | 'unsupported' | 'unavailable' | 'record' | 'session' | 'session_ended' | Outcome
  readonly report: RunReport | null
}

/** Checks a manifest and returns it with snake_case names; throws ManifestError. */
export declare function parseManifest(manifest: Manifest | string): Record<string, unknown>

/** What a code tool answers a model. */
export interface CodeToolResult {
  outcome: Outcome
  stdout: string
  stderr: string
  value: unknown
  exit_code?: number
  error?: ErrorInfo
  denials?: Denial[]
}

export declare function describe(report: RunReport): CodeToolResult

/** A code-execution tool in the Vercel AI SDK's format (`ai` must be installed). */
export declare function sandboxedCodeTool(options?: {
  sandbox?: Sandbox
  manifest?: Manifest | string
  description?: string
}): import('ai').Tool<{ code: string; language?: 'javascript' | 'python' }, CodeToolResult>

export declare const version: string
