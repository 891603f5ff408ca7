;; A WASI preview1 command that reads the GREETING environment variable and prints it, or a default.
;; Run: cargo run --release -p wasmagent-cli -- run examples/hello.wat --manifest examples/hello.toml
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; 0..8: iovec; 16..: scratch; 256: default text; 1024..: environment pointers; 2048..: environment bytes
  (data (i32.const 256) "hello from a sandboxed module\n")
  (func $print (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16))))
  (func $strlen (param $p i32) (result i32) (local $n i32)
    (block $done (loop $next
      (br_if $done (i32.eqz (i32.load8_u (i32.add (local.get $p) (local.get $n)))))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (br $next)))
    (local.get $n))
  (func (export "_start") (local $count i32) (local $i i32) (local $entry i32) (local $len i32)
    (drop (call $environ_sizes_get (i32.const 16) (i32.const 20)))
    (local.set $count (i32.load (i32.const 16)))
    ;; At most 64 variables and 30 KiB of text fit the layout above; the manifest decides, so check.
    (if (i32.or (i32.gt_u (local.get $count) (i32.const 64)) (i32.gt_u (i32.load (i32.const 20)) (i32.const 30000)))
      (then (call $print (i32.const 256) (i32.const 30)) (return)))
    (drop (call $environ_get (i32.const 1024) (i32.const 2048)))
    (block $found (loop $next
      (br_if $found (i32.ge_u (local.get $i) (local.get $count)))
      (local.set $entry (i32.load (i32.add (i32.const 1024) (i32.mul (local.get $i) (i32.const 4)))))
      ;; "GREETING=" is 9 bytes: compare as one 8-byte word plus the '='.
      (if (i32.and
            (i64.eq (i64.load (local.get $entry)) (i64.const 0x474e495445455247))
            (i32.eq (i32.load8_u (i32.add (local.get $entry) (i32.const 8))) (i32.const 61)))
        (then
          (local.set $len (call $strlen (i32.add (local.get $entry) (i32.const 9))))
          (i32.store8 (i32.add (i32.add (local.get $entry) (i32.const 9)) (local.get $len)) (i32.const 10))
          (call $print (i32.add (local.get $entry) (i32.const 9)) (i32.add (local.get $len) (i32.const 1)))
          (return)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
    (call $print (i32.const 256) (i32.const 30))))
