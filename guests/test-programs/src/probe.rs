//! A guest that performs, one after another, the actions named on its command line, and prints one line per
//! action. Tests run it under different manifests and read the lines (and the run report) back.
//!
//! Actions: `hello`, `env`, `args`, `stdin`, `cat:PATH`, `write:PATH:TEXT`, `mkdir:PATH`, `rm:PATH`, `ls:PATH`,
//! `print:N` (N bytes of `x` to stdout), `eprint:N`, `exit:N`, `trap`, `loop`, `alloc:MIB`, `bomb`, `recurse`.

use std::io::{Read, Write};

fn main() {
    let actions: Vec<String> = std::env::args().skip(1).collect();
    for action in &actions {
        let (verb, rest) = action.split_once(':').unwrap_or((action.as_str(), ""));
        match verb {
            "hello" => println!("hello from wasm"),
            "env" => {
                let mut vars: Vec<(String, String)> = std::env::vars().collect();
                vars.sort();
                for (k, v) in vars {
                    println!("ENV {k}={v}");
                }
            }
            "args" => println!("ARGS {}", std::env::args().collect::<Vec<_>>().join(" ")),
            "stdin" => {
                let mut input = String::new();
                let _ = std::io::stdin().read_to_string(&mut input);
                println!("STDIN {input}");
            }
            "cat" => match std::fs::read_to_string(rest) {
                Ok(text) => println!("OK cat {rest} {}", text.trim_end()),
                Err(e) => println!("ERR cat {rest} {e}"),
            },
            "write" => {
                let (path, text) = rest.split_once(':').unwrap_or((rest, ""));
                match std::fs::write(path, text) {
                    Ok(()) => println!("OK write {path}"),
                    Err(e) => println!("ERR write {path} {e}"),
                }
            }
            "mkdir" => match std::fs::create_dir(rest) {
                Ok(()) => println!("OK mkdir {rest}"),
                Err(e) => println!("ERR mkdir {rest} {e}"),
            },
            "rm" => match std::fs::remove_file(rest) {
                Ok(()) => println!("OK rm {rest}"),
                Err(e) => println!("ERR rm {rest} {e}"),
            },
            "ls" => match std::fs::read_dir(rest) {
                Ok(entries) => {
                    let mut names: Vec<String> =
                        entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
                    names.sort();
                    println!("OK ls {rest} {}", names.join(","));
                }
                Err(e) => println!("ERR ls {rest} {e}"),
            },
            "print" => {
                let n: usize = rest.parse().unwrap_or(0);
                let chunk = vec![b'x'; 4096];
                let mut left = n;
                let mut out = std::io::stdout().lock();
                while left > 0 {
                    let len = left.min(chunk.len());
                    if out.write_all(&chunk[..len]).is_err() {
                        break;
                    }
                    left -= len;
                }
                let _ = out.flush();
            }
            "eprint" => {
                let n: usize = rest.parse().unwrap_or(0);
                let _ = std::io::stderr().write_all(&vec![b'e'; n]);
            }
            "exit" => std::process::exit(rest.parse().unwrap_or(0)),
            "trap" => std::process::abort(),
            "loop" => {
                let mut i: u64 = 0;
                loop {
                    i = std::hint::black_box(i.wrapping_add(1));
                }
            }
            "alloc" => {
                let mib: usize = rest.parse().unwrap_or(1);
                let mut v = vec![0u8; mib << 20];
                v[mib << 19] = 1;
                println!("OK alloc {mib} {}", std::hint::black_box(&v).len());
            }
            "bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    let mut block = vec![0u8; 1 << 20];
                    block[0] = 1;
                    hoard.push(std::hint::black_box(block));
                }
            }
            "recurse" => println!("{}", recurse(std::hint::black_box(1))),
            other => println!("UNKNOWN {other}"),
        }
    }
}

fn recurse(n: u64) -> u64 {
    let mut pad = [n; 64];
    pad[0] = std::hint::black_box(n);
    if pad[0] == 0 { 0 } else { recurse(n + 1) + pad[63] }
}
