// Types of the native addon (src/lib.rs), as napi-rs's type generation writes them; index.d.ts is the public API.

/** Answers a tool call: JSON arguments in, `{"ok": value}` or `{"error": message}` as JSON out. */
export type ToolHandler = (argsJson: string) => Promise<string>

/**
 * The engine, its kernels and the host tools. The Rust sandbox is built on first use and again after a tool is
 * added (kernels take their tools when built).
 */
/** A live sandbox kept between runs. */
export declare class NativeSession {
  /** The session's id. */
  get id(): string
  /** Runs `code` in the session. Resolves to `{"report": ...}` or `{"failure": ...}` as JSON text. */
  run(code: string, stdin?: Buffer | undefined | null): Promise<string>
  /** Ends the session and frees its sandbox. */
  close(): void
}

export declare class NativeSandbox {
  /**
   * `cacheDir`: where compiled code is kept between processes (none: memory only); `poolSlots`: how many
   * guests may be instantiated at once (default 128); `maxInFlight`: how many runs may be in flight at once
   * (default 256; past it a run fails at once with kind `unavailable`).
   */
  constructor(cacheDir?: string | undefined | null, poolSlots?: number | undefined | null, maxInFlight?: number | undefined | null)
  /**
   * Adds a host tool answered by `handler(argsJson)`, which resolves to `{"ok": value}` or `{"error": message}`
   * as JSON text. A run sees the tool only where its manifest grants `tool:NAME`.
   */
  addTool(name: string, description: string, schemaJson: string, handler: ToolHandler): void
  /** Opens a session; resolves to it, or to a failure as JSON text. */
  openSession(language: string, manifest?: string | undefined | null, baseDir?: string | undefined | null): Promise<NativeSession | string>
  /** Names of the tools added so far. */
  toolNames(): Array<string>
  /**
   * Runs `code` (`language`: "javascript", "python" or "wasm") held to `manifest` (JSON or TOML; deny-all when
   * absent) on a thread of its own. Resolves to `{"report": ...}` or `{"failure": ...}` as JSON text.
   */
  run(language: string, code: string | Buffer, manifest?: string | undefined | null, stdin?: Buffer | undefined | null, args?: Array<string> | undefined | null, baseDir?: string | undefined | null): Promise<string>
}

/**
 * Checks a manifest (JSON or TOML) and returns it as JSON with snake_case names; throws its refusal as JSON text
 * `{"kind": "manifest", "message", "field"}`.
 */
export declare function parseManifest(text: string): string

/** The package version: the workspace's. */
export declare function version(): string
