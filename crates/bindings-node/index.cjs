'use strict'
// wasmagent for Node: run agent-written JavaScript and Python, and WebAssembly tools, in wasmtime sandboxes held to
// one capability manifest. Every run gets a fresh sandbox on a thread of its own; the event loop goes on meanwhile.
const { join } = require('node:path')

const native = require(join(__dirname, 'wasmagent.linux-x64-gnu.node'))

/** Base class of wasmagent's errors. */
class SandboxError extends Error {}

/** The manifest was refused: malformed, invalid, or above the sandbox's ceilings (`field` names the field). */
class ManifestError extends SandboxError {
  constructor(message, field) {
    super(message)
    this.name = 'ManifestError'
    this.field = field ?? null
  }
}

/**
 * The run did not succeed (`kind` is the report's error kind, `report` the report), or could not start (`kind` is
 * `invalid_code`, `unsupported` or `unavailable`; `report` is null).
 */
class RunError extends SandboxError {
  constructor(message, kind, report) {
    super(message)
    this.name = 'RunError'
    this.kind = kind
    this.report = report ?? null
  }
}

const LANGUAGES = { javascript: 'javascript', js: 'javascript', python: 'python', py: 'python' }

/** A manifest as the native layer takes it: TOML text as is, an object (snake_case or camelCase) as JSON. */
function manifestText(manifest) {
  if (manifest === undefined || manifest === null) return undefined
  if (typeof manifest === 'string') return manifest
  if (typeof manifest === 'object') return JSON.stringify(manifest)
  throw new TypeError(`manifest must be an object or TOML text, not ${typeof manifest}`)
}

/** Checks a manifest and returns it with snake_case names; throws ManifestError. */
function parseManifest(manifest) {
  try {
    return JSON.parse(native.parseManifest(manifestText(manifest) ?? '{}'))
  } catch (error) {
    const failure = parseFailure(error)
    if (failure) throw new ManifestError(failure.message, failure.field)
    throw error
  }
}

function parseFailure(error) {
  try {
    return JSON.parse(error.message).failure
  } catch {
    return undefined
  }
}

function succeeded(report) {
  return report.outcome === 'ok' || (report.outcome === 'exit' && report.exit_code === 0)
}

class Sandbox {
  /** @param {{cacheDir?: string, poolSlots?: number, maxInFlight?: number}} [options] */
  constructor(options = {}) {
    this._native = new native.NativeSandbox(options.cacheDir ?? null, options.poolSlots ?? null, options.maxInFlight ?? null)
  }

  /**
   * Registers `handler` (sync or async, called with the guest's arguments object) as host tool `name`. Guests see
   * it only where the manifest grants `tool:NAME`; what it throws reaches the guest as an error.
   */
  tool(name, handler, { description = '', schema = { type: 'object' } } = {}) {
    if (typeof handler !== 'function') throw new TypeError('a tool handler must be a function')
    this._native.addTool(name, description, JSON.stringify(schema), async (argsJson) => {
      try {
        const result = await handler(JSON.parse(argsJson))
        return JSON.stringify({ ok: result === undefined ? null : result })
      } catch (error) {
        const message = error instanceof Error ? `${error.name}: ${error.message}` : String(error)
        return JSON.stringify({ error: message || `tool ${name} failed` })
      }
    })
    return this
  }

  /** Names of the registered tools. */
  get toolNames() {
    return this._native.toolNames()
  }

  /**
   * Runs `code` ("javascript" or "python") held to `manifest` (deny-all when absent). Rejects with RunError
   * (carrying the report) when the run did not succeed, unless `check` is false; with ManifestError when the
   * manifest is refused.
   */
  async run(code, options = {}) {
    const language = LANGUAGES[options.language ?? 'javascript']
    if (!language) throw new TypeError(`language ${JSON.stringify(options.language)} is not javascript or python`)
    if (typeof code !== 'string') throw new TypeError('code must be a string')
    return this._run(language, code, options)
  }

  /** Runs a WebAssembly module or component (WASI) held to `options.manifest`. */
  async runWasm(module, options = {}) {
    return this._run('wasm', Buffer.from(module), options)
  }

  /**
   * Opens a session: one live sandbox whose definitions and state carry over between runs, held to `manifest`
   * (deny-all when absent) and the session limits. `close()` it when done.
   */
  async session(language = 'javascript', { manifest, baseDir } = {}) {
    const lang = LANGUAGES[language]
    if (!lang) throw new TypeError(`language ${JSON.stringify(language)} is not javascript or python`)
    const opened = await this._native.openSession(lang, manifestText(manifest) ?? null, baseDir ?? null)
    if (typeof opened === 'string') throwFailure(JSON.parse(opened).failure)
    return new Session(opened)
  }

  async _run(language, code, { manifest, stdin, args, check = true, baseDir } = {}) {
    const input = stdin === undefined || stdin === null ? null : Buffer.from(stdin)
    const text = await this._native.run(language, code, manifestText(manifest) ?? null, input, args ?? null, baseDir ?? null)
    return answered(text, check)
  }
}

/** A live sandbox kept between runs (`Sandbox.session`). Runs in one session happen one at a time. */
class Session {
  constructor(native) {
    this._native = native
  }

  /** The session's id (reports carry it as `session_id`). */
  get id() {
    return this._native.id
  }

  /** Runs `code` in the session; rejects as `Sandbox.run` does (kind `session_ended` once the session has ended). */
  async run(code, { stdin, check = true } = {}) {
    if (typeof code !== 'string') throw new TypeError('code must be a string')
    const input = stdin === undefined || stdin === null ? null : Buffer.from(stdin)
    return answered(await this._native.run(code, input), check)
  }

  /** Ends the session and frees its sandbox. */
  close() {
    this._native.close()
  }
}

function throwFailure({ kind, message, field, report }) {
  if (kind === 'manifest') throw new ManifestError(message, field)
  throw new RunError(message, kind, report)
}

function answered(text, check) {
  const answer = JSON.parse(text)
  if (answer.failure) throwFailure(answer.failure)
  const report = answer.report
  if (check && !succeeded(report)) {
    const kind = report.error ? report.error.kind : report.outcome
    const message = report.error ? report.error.message : `the guest exited with code ${report.exit_code}`
    throw new RunError(`${kind}: ${message}`, kind, report)
  }
  return report
}

const DESCRIPTION =
  'Run a short JavaScript or Python program in an isolated sandbox and get back its stdout, stderr, the value of ' +
  'its last expression and any error. The sandbox has no network, files or environment unless granted.'

/** Longest stdout or stderr passed back to a model, in characters. */
const MAX_OUTPUT_CHARS = 20000

function cut(text) {
  return text.length <= MAX_OUTPUT_CHARS
    ? text
    : `${text.slice(0, MAX_OUTPUT_CHARS)}\n[cut: ${text.length - MAX_OUTPUT_CHARS} more characters]`
}

/** The parts of a report a model needs. */
function describe(report) {
  const summary = { outcome: report.outcome, stdout: cut(report.stdout), stderr: cut(report.stderr), value: report.value }
  if (report.exit_code !== undefined && report.exit_code !== null) summary.exit_code = report.exit_code
  if (report.error) summary.error = { kind: report.error.kind, message: cut(report.error.message) }
  if (report.denials.length) summary.denials = report.denials.map(({ capability, target, reason }) => ({ capability, target, reason }))
  return summary
}

/**
 * A code-execution tool in the Vercel AI SDK's format (pass it to `generateText({ tools: { runCode: ... } })`): the
 * model's code runs in `sandbox` under the application's `manifest`; failures are part of the answer.
 */
function sandboxedCodeTool({ sandbox = new Sandbox(), manifest, description = DESCRIPTION } = {}) {
  const { tool, jsonSchema } = require('ai')
  return tool({
    description,
    inputSchema: jsonSchema({
      type: 'object',
      properties: {
        code: { type: 'string', description: 'The program to run.' },
        language: { type: 'string', enum: ['javascript', 'python'], description: 'javascript or python' },
      },
      required: ['code'],
      additionalProperties: false,
    }),
    execute: async ({ code, language = 'javascript' }) =>
      describe(await sandbox.run(code, { language, manifest, check: false })),
  })
}

module.exports = { Sandbox, Session, SandboxError, ManifestError, RunError, parseManifest, sandboxedCodeTool, describe, version: native.version() }
