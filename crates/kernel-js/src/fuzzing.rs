//! The body of the `guest_call` fuzz target in `fuzz/` (the guest→host call ABI of `wasmagent.tool_call`), shared
//! with the regression test that replays `fuzz/seeds/` and `fuzz/regressions/` on the stable toolchain. It panics
//! when an invariant breaks; a refused call is not a failure. Not part of the crate's API.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use wasmagent_kernel_wasi::script_bridge::{pending_response, tool_call_request};
use wasmagent_manifest::{CapabilityManifest, EffectiveManifest, ManifestCeilings};
use wasmagent_tools::{MAX_TOOL_ARGS_BYTES, MAX_TOOL_NAME_BYTES, Tool, ToolRegistry, ToolSession};

/// Tools granted to the fuzzed run; `secret` is registered but not granted.
const GRANTED: [&str; 3] = ["echo", "fail", "big"];

/// Bytes of one call record: a mode byte and four little-endian `i32`s (name pointer and length, arguments
/// pointer and length).
const CALL_RECORD: usize = 17;

/// The registry and one manifest per `max_host_calls` from 0 to 7, built once.
fn fixtures() -> &'static (Arc<ToolRegistry>, Vec<EffectiveManifest>) {
    static FIXTURES: OnceLock<(Arc<ToolRegistry>, Vec<EffectiveManifest>)> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let schema = serde_json::json!({"type": "object"});
        let mut tools = ToolRegistry::new();
        let tool_list = [
            Tool::new("echo", "returns its arguments", schema.clone(), Ok),
            Tool::new("fail", "fails with its argument as the message", schema.clone(), |args| {
                Err(args.as_str().map_or_else(|| args.to_string(), str::to_owned))
            }),
            Tool::new("big", "returns a string of N bytes", schema.clone(), |args| {
                let n = args.as_u64().unwrap_or(0).min(2 * 1024 * 1024) as usize;
                Ok(serde_json::Value::String("x".repeat(n)))
            }),
            Tool::new("secret", "never granted", schema, |_| Ok(serde_json::json!("the secret"))),
        ];
        for tool in tool_list {
            if let Err(e) = tools.register(tool) {
                panic!("{e}");
            }
        }
        let manifests = (0..8)
            .map(|max_host_calls| {
                CapabilityManifest {
                    extra_capabilities: GRANTED.iter().map(|t| format!("tool:{t}")).collect(),
                    max_host_calls: Some(max_host_calls),
                    ..Default::default()
                }
                .resolve(std::path::Path::new("/"), &ManifestCeilings::default())
                .unwrap_or_else(|e| panic!("{e}"))
            })
            .collect();
        (Arc::new(tools), manifests)
    })
}

/// `fuzz/fuzz_targets/guest_call.rs`: a run's `tool_call`s with arbitrary pointers, lengths and guest memory.
///
/// Input: `max_host_calls` (byte 0, mod 8), the number of calls (byte 1, mod 8, plus one), that many call records,
/// then the guest's memory. A record's mode byte makes its name (bit 0) or arguments (bit 1) range lie inside
/// memory by reducing the raw values; otherwise they are used as they are.
///
/// Invariants: a range is read exactly when it lies inside memory and within its cap, and then it is those bytes;
/// a call succeeds only for a granted tool with JSON arguments within `max_host_calls`, and `echo` returns its
/// arguments; the length the guest is told decodes (as the guest decodes it) to exactly the outcome; every call is
/// counted, and recorded up to the first one refused past `max_host_calls`; denials are never repeated.
pub fn guest_call(data: &[u8]) {
    let [limit, count, rest @ ..] = data else {
        return;
    };
    let calls = usize::from(count % 8) + 1;
    let Some((records, memory)) = rest.split_at_checked(calls * CALL_RECORD) else {
        return;
    };
    let (tools, manifests) = fixtures();
    let manifest = &manifests[usize::from(limit % 8)];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut session = ToolSession::new(tools.clone(), manifest, deadline);
    for (i, record) in records.chunks_exact(CALL_RECORD).enumerate() {
        let word = |at: usize| i32::from_le_bytes([record[at], record[at + 1], record[at + 2], record[at + 3]]);
        let name_range = in_memory(record[0] & 1 != 0, word(1), word(5), memory.len());
        let args_range = in_memory(record[0] & 2 != 0, word(9), word(13), memory.len());

        let (name, args) = tool_call_request(memory, name_range, args_range);
        let expected_name =
            expected_bytes(memory, name_range, MAX_TOOL_NAME_BYTES).and_then(|bytes| std::str::from_utf8(bytes).ok());
        assert_eq!(name.as_deref().ok(), expected_name, "name read at {name_range:?} from {} bytes", memory.len());
        let expected_args = expected_bytes(memory, args_range, MAX_TOOL_ARGS_BYTES);
        assert_eq!(args.as_deref().ok(), expected_args, "arguments read at {args_range:?}");

        let outcome = session.call(name.clone(), args.clone());
        let calls_made = i as u64 + 1;
        if calls_made > manifest.max_host_calls() {
            let refused = outcome.as_ref().expect_err("a call over max_host_calls ran");
            assert!(refused.contains("max_host_calls"), "{refused}");
        }
        if let Ok(result) = &outcome {
            let (Ok(name), Ok(args)) = (&name, &args) else {
                panic!("a call whose name or arguments could not be read succeeded");
            };
            assert!(GRANTED.contains(&name.as_str()), "the ungranted tool {name:?} ran");
            let args: serde_json::Value = serde_json::from_slice(args)
                .unwrap_or_else(|e| panic!("a call with arguments that are not JSON ran: {e}"));
            if name == "echo" {
                let echoed: Option<serde_json::Value> = serde_json::from_slice(result).ok();
                assert_eq!(echoed, Some(args), "echo returned something else");
            }
        }

        if let Err(message) = &outcome {
            assert!(!message.is_empty(), "a call failed with an empty message, which the guest reads as a result");
        }
        let (announced, pending) = pending_response(outcome.clone());
        // Decoded as `take_response` in guests/js/src/lib.rs decodes it.
        let (ok, len) = (announced >= 0, announced.unsigned_abs() as usize);
        assert_eq!(len, pending.len(), "the guest is told {announced} for a {}-byte response", pending.len());
        let decoded = if ok { Ok(pending) } else { Err(String::from_utf8_lossy(&pending).into_owned()) };
        assert_eq!(decoded, outcome, "the guest would misread the outcome (told {announced})");
    }
    let records = session.into_records();
    // Past `max_host_calls`, only the first refused call is listed; every call is counted.
    let listed = (calls as u64).min(manifest.max_host_calls().saturating_add(1));
    assert_eq!(records.calls.len() as u64, listed, "calls missing from the report");
    assert_eq!(records.host_calls, calls as u64);
    let mut seen = HashSet::new();
    for denial in &records.denials {
        assert!(seen.insert((&denial.capability, &denial.target)), "denial {denial:?} repeated");
    }
}

/// The pointer and length to use: as given, or reduced so the range lies inside a memory of `size` bytes.
fn in_memory(reduce: bool, ptr: i32, len: i32, size: usize) -> (i32, i32) {
    if !reduce {
        return (ptr, len);
    }
    let ptr = (ptr as u32 as usize) % (size + 1);
    let len = (len as u32 as usize) % (size - ptr + 1);
    (ptr as i32, len as i32)
}

/// The bytes a read of `(ptr, len)` must return, worked out in 64-bit arithmetic.
fn expected_bytes(memory: &[u8], (ptr, len): (i32, i32), cap: usize) -> Option<&[u8]> {
    let (start, len) = (u64::from(ptr as u32), u64::from(len as u32));
    if len > cap as u64 || start + len > memory.len() as u64 {
        return None;
    }
    memory.get(start as usize..(start + len) as usize)
}
