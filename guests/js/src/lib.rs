//! The JavaScript engine of wasmagent's `js` kernel: QuickJS, compiled to wasm32-wasip1.
//!
//! `wizer-initialize` builds the runtime, the context and the guest-side glue once, at build time; wasmtime-wizer
//! snapshots the result. Each run is a fresh instance of that snapshot: the host writes a JSON request with
//! `wasmagent_alloc`, calls `wasmagent_run`, and receives the outcome through the `wasmagent.result` import. A
//! session calls `wasmagent_run` again on the same instance for each of its calls: globals a script defines stay.
//!
//! Everything the script can reach is installed here: `console` (WASI stdout/stderr), `env` (the WASI
//! environment, which the host builds from the manifest and nothing else), `fs` (WASI files, so the host's mounts
//! and denial reports apply unchanged), `tools` (only the granted names, dotted ones as nested namespaces; every
//! call is checked again by the host), `fetch` (with `Headers` and `Response`; every request goes through the
//! host's egress policy) and `display` (artifacts for the run report, held to `max_artifact_bytes` by the host).
//! There is no `process`, `require` or module loader.

use rquickjs::context::EvalOptions;
use rquickjs::prelude::Func;
use rquickjs::{
    ArrayBuffer, CatchResultExt, CaughtError, Context, Ctx, Exception, Function, Object, Persistent, Runtime, Value,
};
use serde::Deserialize;
use std::cell::{Cell, RefCell};

#[link(wasm_import_module = "wasmagent")]
unsafe extern "C" {
    /// Hands the run's outcome (JSON) to the host.
    fn result(ptr: *const u8, len: usize);
    /// Calls a host tool with JSON arguments; returns the length of the JSON response, or -1 when the host refused
    /// to answer (the reason is then the response).
    fn tool_call(name_ptr: *const u8, name_len: usize, args_ptr: *const u8, args_len: usize) -> i32;
    /// Copies the pending tool or HTTP response (exactly `len` bytes) into guest memory.
    fn tool_response(ptr: *mut u8, len: usize) -> i32;
    /// Sends an HTTP request (`meta`: JSON {method, url, headers}; `body`: raw bytes) through the host's egress
    /// path; returns the length of the response (`u32` LE meta length, meta JSON, body), or minus the length of
    /// the error message.
    fn http_request(meta_ptr: *const u8, meta_len: usize, body_ptr: *const u8, body_len: usize) -> i32;
    /// Adds an artifact (`meta`: JSON {kind, mime, title}; `body`: the content); returns 0 when it was added, 1
    /// when a limit refused it (the report's denials say why), or minus the length of an error message.
    fn artifact(meta_ptr: *const u8, meta_len: usize, body_ptr: *const u8, body_len: usize) -> i32;
}

#[link(wasm_import_module = "wasi_snapshot_preview1")]
unsafe extern "C" {
    fn random_get(buf: *mut u8, len: usize) -> u16;
}

/// The request the host writes before `wasmagent_run`.
#[derive(Deserialize)]
struct Request {
    code: String,
    name: String,
    tools: Vec<String>,
    memory_limit: usize,
    /// A session's call: how long it may run before QuickJS interrupts it (an uncatchable exception that unwinds
    /// the engine cleanly, so the session can go on), a little before the host's own deadline would trap.
    #[serde(default)]
    interrupt_after_ms: Option<u64>,
}

struct Engine {
    runtime: Runtime,
    context: Context,
    hooks: Persistent<Object<'static>>,
}

thread_local! {
    static ENGINE: RefCell<Option<Engine>> = const { RefCell::new(None) };
    /// xorshift128+ state for `Math.random`, reseeded from WASI at the start of every run (a snapshot would
    /// otherwise give every run the same sequence).
    static RNG: Cell<(u64, u64)> = const { Cell::new((0x9e37_79b9_7f4a_7c15, 0xbf58_476d_1ce4_e5b9)) };
    /// Whether `env` and `tools` are installed in this instance. The snapshot is taken before any run, so every
    /// fresh instance starts without them; a session's instance keeps them (its manifest does not change) and
    /// installs them once, on its first call, since they are non-configurable once defined.
    static SET_UP: Cell<bool> = const { Cell::new(false) };
    /// Whether the interrupt handler stopped the current call.
    static INTERRUPTED: Cell<bool> = const { Cell::new(false) };
}

/// The guest-side glue, evaluated once at initialisation. It captures the built-ins it uses, so nothing a script
/// does to `JSON` or `Object` afterwards can change how results are serialised or how tools are called.
const GLUE: &str = r#"
(function (n) {
  'use strict';
  const stringify = JSON.stringify, parse = JSON.parse, freeze = Object.freeze;
  const define = Object.defineProperty, create = Object.create, String_ = String, Error_ = Error, Map_ = Map;
  const fmt = (v) => {
    if (typeof v === 'string') return v;
    if (v instanceof Error_) return v.stack ? String_(v) + '\n' + v.stack : String_(v);
    try { const s = stringify(v); return s === undefined ? String_(v) : s; } catch (e) { return String_(v); }
  };
  const line = (args) => args.map(fmt).join(' ');
  const hidden = (name, value) =>
    define(globalThis, name, { value, writable: false, enumerable: false, configurable: false });
  hidden('console', freeze({
    log: (...a) => n.print(1, line(a)), info: (...a) => n.print(1, line(a)), debug: (...a) => n.print(1, line(a)),
    warn: (...a) => n.print(2, line(a)), error: (...a) => n.print(2, line(a)),
  }));
  hidden('fs', freeze({
    readFile: (path) => n.fsRead(String_(path)),
    writeFile: (path, data) => n.fsWrite(String_(path), String_(data)),
    readdir: (path) => parse(n.fsReaddir(String_(path))),
    stat: (path) => parse(n.fsStat(String_(path))),
    exists: (path) => n.fsExists(String_(path)),
  }));
  define(Math, 'random', { value: n.random, writable: false, enumerable: false, configurable: false });
  const Promise_ = Promise, TypeError_ = TypeError, ArrayBuffer_ = ArrayBuffer, isView = ArrayBuffer.isView;
  const iterator = Symbol.iterator, isArray = Array.isArray, entriesOf = Object.entries;
  class Headers {
    constructor(init) {
      define(this, 'list', { value: [], writable: true, enumerable: false });
      if (init === undefined || init === null) return;
      const source = init instanceof Headers ? init.list : isArray(init) ? init : entriesOf(init);
      for (const pair of source) this.append(pair[0], pair[1]);
    }
    append(name, value) { this.list.push([String_(name).toLowerCase(), String_(value)]); }
    set(name, value) { this.delete(name); this.append(name, value); }
    delete(name) { const key = String_(name).toLowerCase(); this.list = this.list.filter((e) => e[0] !== key); }
    get(name) {
      const key = String_(name).toLowerCase();
      const values = this.list.filter((e) => e[0] === key).map((e) => e[1]);
      return values.length ? values.join(', ') : null;
    }
    has(name) { return this.get(name) !== null; }
    forEach(callback, self) { for (const [k, v] of this.list) callback.call(self, v, k, this); }
    entries() { return this.list.map((e) => [e[0], e[1]])[iterator](); }
    keys() { return this.list.map((e) => e[0])[iterator](); }
    values() { return this.list.map((e) => e[1])[iterator](); }
    [iterator]() { return this.entries(); }
  }
  class Response {
    constructor(meta, body) {
      this.status = meta.status; this.statusText = ''; this.ok = meta.status >= 200 && meta.status < 300;
      this.url = meta.url; this.redirected = meta.redirected; this.type = 'basic';
      this.headers = new Headers(meta.headers); this.bodyUsed = false;
      define(this, 'body_', { value: body, writable: true, enumerable: false });
    }
    take_() {
      if (this.bodyUsed) throw new TypeError_('the response body was already read');
      this.bodyUsed = true;
      return this.body_;
    }
    arrayBuffer() { try { return Promise_.resolve(this.take_()); } catch (e) { return Promise_.reject(e); } }
    text() { try { return Promise_.resolve(n.utf8(this.take_())); } catch (e) { return Promise_.reject(e); } }
    json() { try { return Promise_.resolve(parse(n.utf8(this.take_()))); } catch (e) { return Promise_.reject(e); } }
  }
  const fetch = (input, init) => {
    try {
      const options = init || {};
      const url = input !== null && typeof input === 'object' && 'url' in input ? String_(input.url) : String_(input);
      const method = options.method === undefined ? 'GET' : String_(options.method);
      let body = options.body === undefined || options.body === null ? '' : options.body;
      if (isView(body)) body = body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength);
      else if (!(body instanceof ArrayBuffer_)) body = String_(body);
      const response = n.httpFetch(stringify({ method, url, headers: new Headers(options.headers).list }), body);
      return Promise_.resolve(new Response(parse(response.meta), response.body));
    } catch (e) {
      return Promise_.reject(e instanceof Error_ ? e : new TypeError_(String_(e)));
    }
  };
  hidden('fetch', fetch);
  hidden('Headers', Headers);
  hidden('Response', Response);
  const replacer = function (key, value) {
    const t = typeof value;
    if (t === 'function' || t === 'symbol' || t === 'bigint') {
      throw new TypeError('cannot convert a ' + t + ' to JSON' + (key === '' ? '' : ' (at key ' + stringify(key) + ')'));
    }
    return value;
  };
  // `display.*` returns true when the artifact was added and false when a limit refused it (the report says why).
  const show = (kind, content, title, mime) => n.artifact(stringify({
    kind, mime: mime === undefined ? '' : String_(mime), title: title === undefined || title === null ? null : String_(title),
  }), content);
  const json = (value) => value === undefined ? 'null' : stringify(value, replacer);
  hidden('display', freeze({
    html: (html, title) => show('html', String_(html), title),
    svg: (svg, title) => show('svg', String_(svg), title),
    markdown: (text, title) => show('markdown', String_(text), title),
    table: (rows, title) => {
      if (!isArray(rows)) throw new TypeError_('display.table: rows must be an array');
      return show('table', json(rows), title);
    },
    json: (value, title) => show('json', json(value), title),
    image: (bytes, mime, title) => {
      let buffer = bytes;
      if (isView(bytes)) buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
      if (!(buffer instanceof ArrayBuffer_)) throw new TypeError_('display.image: bytes must be an ArrayBuffer or a typed array');
      return show('image', buffer, title, mime === undefined ? '' : mime);
    },
  }));
  return freeze({
    serialize: (value) => value === undefined ? 'null' : stringify(value, replacer),
    setup: (env, toolNames) => {
      hidden('env', freeze(env));
      // Dotted names are nested namespaces: `github.search_issues` is `tools.github.search_issues`. Every level
      // is frozen and gets its members through defineProperty, and `tools` and every namespace have a null
      // prototype, so a part named `__proto__` or `constructor` is an ordinary own property, never a path to
      // Object.prototype. A name that is both a tool and a namespace (tools `a` and `a.b`) is the tool's function
      // carrying the namespace's members (`tools.a()` and `tools.a.b()`). Each function calls the host with the
      // full name, and the host checks the grant again.
      const root = { name: null, parts: new Map_() };
      for (const name of toolNames) {
        let node = root;
        for (const part of name.split('.')) {
          if (!node.parts.has(part)) node.parts.set(part, { name: null, parts: new Map_() });
          node = node.parts.get(part);
        }
        node.name = name;
      }
      const build = (node) => {
        const name = node.name;
        const target = name === null
          ? create(null)
          : (args) => parse(n.toolCall(name, stringify(args === undefined ? {} : args)));
        for (const [part, child] of node.parts) {
          define(target, part, { value: build(child), writable: false, enumerable: true, configurable: false });
        }
        return freeze(target);
      };
      hidden('tools', build(root));
    },
  });
})
"#;

fn init_engine() -> Result<Engine, String> {
    let runtime = Runtime::new().map_err(|e| e.to_string())?;
    let context = Context::full(&runtime).map_err(|e| e.to_string())?;
    let hooks = context.with(|ctx| -> Result<Persistent<Object<'static>>, String> {
        let natives = Object::new(ctx.clone()).map_err(|e| e.to_string())?;
        natives.set("print", Func::from(print)).map_err(|e| e.to_string())?;
        natives.set("random", Func::from(random)).map_err(|e| e.to_string())?;
        natives.set("toolCall", Func::from(call_tool)).map_err(|e| e.to_string())?;
        natives.set("httpFetch", Func::from(http_fetch)).map_err(|e| e.to_string())?;
        natives.set("utf8", Func::from(utf8)).map_err(|e| e.to_string())?;
        natives.set("artifact", Func::from(display)).map_err(|e| e.to_string())?;
        natives.set("fsRead", Func::from(fs_read)).map_err(|e| e.to_string())?;
        natives.set("fsWrite", Func::from(fs_write)).map_err(|e| e.to_string())?;
        natives.set("fsReaddir", Func::from(fs_readdir)).map_err(|e| e.to_string())?;
        natives.set("fsStat", Func::from(fs_stat)).map_err(|e| e.to_string())?;
        natives.set("fsExists", Func::from(fs_exists)).map_err(|e| e.to_string())?;
        let glue: Function = ctx.eval(GLUE).map_err(|e| e.to_string())?;
        let hooks: Object = glue.call((natives,)).map_err(|e| e.to_string())?;
        Ok(Persistent::save(&ctx, hooks))
    })?;
    Ok(Engine { runtime, context, hooks })
}

#[unsafe(export_name = "wizer-initialize")]
pub extern "C" fn wizer_initialize() {
    ENGINE.with(|engine| {
        if engine.borrow().is_none() {
            match init_engine() {
                Ok(e) => *engine.borrow_mut() = Some(e),
                Err(message) => panic!("cannot initialise QuickJS: {message}"),
            }
        }
    });
}

/// Memory for the host to write the request into. Ownership passes to `wasmagent_run`.
#[unsafe(export_name = "wasmagent_alloc")]
pub extern "C" fn wasmagent_alloc(len: usize) -> *mut u8 {
    let mut buffer = Vec::<u8>::with_capacity(len);
    let ptr = buffer.as_mut_ptr();
    std::mem::forget(buffer);
    ptr
}

/// Runs one request (JSON, `len` bytes at `ptr`, from `wasmagent_alloc`) and reports through `result`.
#[unsafe(export_name = "wasmagent_run")]
pub extern "C" fn wasmagent_run(ptr: *mut u8, len: usize) {
    // SAFETY: the host allocated this buffer with `wasmagent_alloc(len)` and filled `len` bytes.
    let bytes = unsafe { Vec::from_raw_parts(ptr, len, len) };
    let outcome = match serde_json::from_slice::<Request>(&bytes) {
        Ok(request) => run(request),
        Err(e) => error_json("internal", &format!("malformed request: {e}"), None),
    };
    // SAFETY: a plain byte slice handed to the host, which copies it before returning.
    unsafe { result(outcome.as_ptr(), outcome.len()) };
}

fn run(request: Request) -> String {
    wizer_initialize();
    reseed();
    ENGINE.with(|engine| {
        let engine = engine.borrow();
        let Some(engine) = engine.as_ref() else {
            return error_json("internal", "the engine is not initialised", None);
        };
        engine.runtime.set_memory_limit(request.memory_limit);
        // QuickJS's own stack check does not fire in WebAssembly (it measures the C stack in linear memory, which
        // runaway recursion does not exhaust first): the engine's native WebAssembly stack limit ends the run.
        engine.runtime.set_max_stack_size(0);
        INTERRUPTED.with(|flag| flag.set(false));
        match request.interrupt_after_ms {
            Some(ms) => {
                let deadline = std::time::Instant::now() + std::time::Duration::from_millis(ms);
                engine.runtime.set_interrupt_handler(Some(Box::new(move || {
                    let over = std::time::Instant::now() >= deadline;
                    if over {
                        INTERRUPTED.with(|flag| flag.set(true));
                    }
                    over
                })));
            }
            None => engine.runtime.set_interrupt_handler(None),
        }
        let outcome = engine.context.with(|ctx| evaluate(&ctx, engine.hooks.clone(), &request));
        if INTERRUPTED.with(Cell::get) {
            return error_json("timeout", "interrupted at the call's deadline", None);
        }
        outcome
    })
}

fn evaluate(ctx: &Ctx<'_>, hooks: Persistent<Object<'static>>, request: &Request) -> String {
    let hooks = match hooks.restore(ctx) {
        Ok(h) => h,
        Err(e) => return error_json("internal", &e.to_string(), None),
    };
    let setup = (|| -> rquickjs::Result<()> {
        if SET_UP.with(Cell::get) {
            return Ok(());
        }
        let env = Object::new(ctx.clone())?;
        for (key, value) in std::env::vars() {
            env.set(key, value)?;
        }
        let setup: Function = hooks.get("setup")?;
        setup.call::<_, ()>((env, request.tools.clone()))?;
        SET_UP.with(|done| done.set(true));
        Ok(())
    })()
    .catch(ctx);
    if let Err(e) = setup {
        return caught_json(e, "internal");
    }

    let mut options = EvalOptions::default();
    options.global = true;
    options.strict = false;
    options.backtrace_barrier = true;
    options.filename = Some(request.name.clone());
    let evaluated = ctx.eval_with_options::<Value, _>(request.code.as_bytes(), options).catch(ctx);
    let value = match evaluated {
        Ok(value) => value,
        Err(e) => return caught_json(e, "exception"),
    };
    let value = match value.as_promise() {
        Some(promise) => match promise.finish::<Value>().catch(ctx) {
            Ok(value) => value,
            Err(CaughtError::Error(rquickjs::Error::WouldBlock)) => {
                return error_json("exception", "the result is a promise that never settles", None);
            }
            Err(e) => return caught_json(e, "exception"),
        },
        None => value,
    };
    // Let already-scheduled promise callbacks run (logging after an await, for example).
    while ctx.execute_pending_job() {}
    let serialized = (|| -> rquickjs::Result<String> {
        let serialize: Function = hooks.get("serialize")?;
        serialize.call((value,))
    })()
    .catch(ctx);
    match serialized {
        Ok(json) => format!("{{\"value\":{json}}}"),
        // The stack would only show wasmagent's own serializer.
        Err(CaughtError::Exception(e)) => error_json("serialization", &e.message().unwrap_or_default(), None),
        Err(e) => caught_json(e, "serialization"),
    }
}

fn caught_json(error: CaughtError<'_>, kind: &str) -> String {
    match error {
        CaughtError::Exception(exception) => {
            let name: Option<String> = exception.get::<_, Option<String>>("name").ok().flatten();
            let message = exception.message().unwrap_or_default();
            let message = match name {
                Some(name) if !name.is_empty() => format!("{name}: {message}"),
                _ => message,
            };
            error_json(kind, &message, exception.stack())
        }
        CaughtError::Value(value) => {
            let text = value
                .as_string()
                .and_then(|s| s.to_string().ok())
                .or_else(|| value.get::<rquickjs::Coerced<String>>().ok().map(|c| c.0))
                .unwrap_or_else(|| "a non-Error value was thrown".into());
            error_json(kind, &format!("uncaught: {text}"), None)
        }
        CaughtError::Error(e) => error_json(kind, &e.to_string(), None),
    }
}

fn error_json(kind: &str, message: &str, stack: Option<String>) -> String {
    serde_json::json!({ "error": { "kind": kind, "message": message, "stack": stack } }).to_string()
}

fn reseed() {
    let mut seed = [0u8; 16];
    // SAFETY: a 16-byte buffer in guest memory.
    unsafe { random_get(seed.as_mut_ptr(), seed.len()) };
    let a = u64::from_le_bytes(seed[..8].try_into().unwrap_or_default()) | 1;
    let b = u64::from_le_bytes(seed[8..].try_into().unwrap_or_default());
    RNG.with(|rng| rng.set((a, b)));
}

fn random() -> f64 {
    RNG.with(|rng| {
        let (mut s1, s0) = rng.get();
        s1 ^= s1 << 23;
        s1 ^= s1 >> 17;
        s1 ^= s0 ^ (s0 >> 26);
        rng.set((s0, s1));
        (s0.wrapping_add(s1) >> 11) as f64 / (1u64 << 53) as f64
    })
}

fn print(fd: i32, text: String) {
    use std::io::Write;
    // A write past the output cap ends the run on the host side; nothing to handle here.
    if fd == 2 {
        let _ = writeln!(std::io::stderr(), "{text}");
    } else {
        let _ = writeln!(std::io::stdout(), "{text}");
    }
}

fn throw(ctx: &Ctx<'_>, message: String) -> rquickjs::Error {
    Exception::throw_message(ctx, &message)
}

fn call_tool(ctx: Ctx<'_>, name: String, args: String) -> rquickjs::Result<String> {
    // SAFETY: both slices live for the duration of the call; the host copies them.
    let len = unsafe { tool_call(name.as_ptr(), name.len(), args.as_ptr(), args.len()) };
    match take_response(&ctx, len, &format!("tool {name}"))? {
        Ok(response) => Ok(String::from_utf8_lossy(&response).into_owned()),
        Err(message) => Err(throw(&ctx, format!("tool {name}: {message}"))),
    }
}

/// Takes the host's pending response of `len` bytes (or, for a negative `len`, its error message).
fn take_response(ctx: &Ctx<'_>, len: i32, what: &str) -> rquickjs::Result<Result<Vec<u8>, String>> {
    let ok = len >= 0;
    let len = len.unsigned_abs() as usize;
    let mut response = vec![0u8; len];
    // SAFETY: `response` has exactly the length the host announced.
    if unsafe { tool_response(response.as_mut_ptr(), len) } != 0 {
        return Err(throw(ctx, format!("{what}: the host did not deliver a response")));
    }
    Ok(if ok { Ok(response) } else { Err(String::from_utf8_lossy(&response).into_owned()) })
}

fn http_fetch<'js>(ctx: Ctx<'js>, meta: String, body: Value<'js>) -> rquickjs::Result<Object<'js>> {
    let body = bytes_of(&body)?;
    // SAFETY: both slices live for the duration of the call; the host copies them.
    let len = unsafe { http_request(meta.as_ptr(), meta.len(), body.as_ptr(), body.len()) };
    let response = match take_response(&ctx, len, "fetch")? {
        Ok(response) => response,
        Err(message) => return Err(Exception::throw_type(&ctx, &message)),
    };
    let meta_len = response.get(..4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let Some((meta, body)) = meta_len.and_then(|n| Some((response.get(4..4 + n)?, response.get(4 + n..)?))) else {
        return Err(throw(&ctx, "fetch: the host sent a malformed response".into()));
    };
    let result = Object::new(ctx.clone())?;
    result.set("meta", String::from_utf8_lossy(meta).into_owned())?;
    result.set("body", ArrayBuffer::new(ctx.clone(), body.to_vec())?)?;
    Ok(result)
}

/// The bytes of a string (UTF-8) or an `ArrayBuffer`; anything else is empty.
fn bytes_of(value: &Value<'_>) -> rquickjs::Result<Vec<u8>> {
    Ok(match (value.as_string(), ArrayBuffer::from_value(value.clone())) {
        (Some(text), _) => text.to_string()?.into_bytes(),
        // SAFETY: the bytes are copied before any JavaScript runs again.
        (None, Some(buffer)) => unsafe { buffer.as_bytes() }.map(<[u8]>::to_vec).unwrap_or_default(),
        (None, None) => Vec::new(),
    })
}

fn display<'js>(ctx: Ctx<'js>, meta: String, content: Value<'js>) -> rquickjs::Result<bool> {
    let body = bytes_of(&content)?;
    // SAFETY: both slices live for the duration of the call; the host copies them.
    let code = unsafe { artifact(meta.as_ptr(), meta.len(), body.as_ptr(), body.len()) };
    match code {
        0 => Ok(true),
        1 => Ok(false),
        len => match take_response(&ctx, len, "display")? {
            Err(message) => Err(Exception::throw_type(&ctx, &message)),
            Ok(_) => Err(throw(&ctx, "display: the host sent an unexpected answer".into())),
        },
    }
}

fn utf8(buffer: ArrayBuffer<'_>) -> String {
    // SAFETY: the bytes are copied before any JavaScript runs again.
    String::from_utf8_lossy(unsafe { buffer.as_bytes() }.unwrap_or_default()).into_owned()
}

fn io_error(ctx: &Ctx<'_>, op: &str, path: &str, error: std::io::Error) -> rquickjs::Error {
    throw(ctx, format!("fs.{op}({path:?}): {error}"))
}

fn fs_read(ctx: Ctx<'_>, path: String) -> rquickjs::Result<String> {
    std::fs::read_to_string(&path).map_err(|e| io_error(&ctx, "readFile", &path, e))
}

fn fs_write(ctx: Ctx<'_>, path: String, data: String) -> rquickjs::Result<()> {
    std::fs::write(&path, data).map_err(|e| io_error(&ctx, "writeFile", &path, e))
}

fn fs_readdir(ctx: Ctx<'_>, path: String) -> rquickjs::Result<String> {
    let entries = std::fs::read_dir(&path).map_err(|e| io_error(&ctx, "readdir", &path, e))?;
    let mut names: Vec<String> =
        entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    Ok(serde_json::to_string(&names).unwrap_or_else(|_| "[]".into()))
}

fn fs_stat(ctx: Ctx<'_>, path: String) -> rquickjs::Result<String> {
    let meta = std::fs::metadata(&path).map_err(|e| io_error(&ctx, "stat", &path, e))?;
    let mtime_ms = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as f64);
    Ok(serde_json::json!({
        "size": meta.len(),
        "isFile": meta.is_file(),
        "isDirectory": meta.is_dir(),
        "mtimeMs": mtime_ms,
    })
    .to_string())
}

fn fs_exists(path: String) -> bool {
    std::fs::metadata(&path).is_ok()
}
