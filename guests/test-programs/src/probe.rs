//! A guest that performs, one after another, the actions named on its command line, and prints one line per
//! action. Tests run it under different manifests and read the lines (and the run report) back.
//!
//! Actions: `hello`, `env`, `args`, `stdin`, `cat:PATH`, `write:PATH:TEXT`, `mkdir:PATH`, `rm:PATH`, `ls:PATH`,
//! `print:N` (N bytes of `x` to stdout), `eprint:N`, `exit:N`, `trap`, `loop`, `alloc:MIB`, `bomb`, `recurse`,
//! `get:URL` (an HTTP GET through `wasi:http`; components only), `post:N:URL` (a POST of N bytes),
//! `http-stall:URL` (writes a POST body before handing the request over), `http-unfinished:URL` (hands the request
//! over, writes part of its body and waits for the response without finishing it), `http-dropped-body:URL` (drops
//! the body unfinished, then waits for the response), `http-hold:N:URL` (N GETs one after another, keeping every
//! response with its body unread).
//! As a micro-tool (JSON in on stdin, JSON out on stdout): `json-echo` prints `{"echo":STDIN,"bytes":N}`;
//! `json-cat:PATH` prints the file's text as a JSON string, or exits 1 with the error on stderr.

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
            "json-echo" => {
                let mut input = String::new();
                let _ = std::io::stdin().read_to_string(&mut input);
                println!("{{\"echo\":{},\"bytes\":{}}}", input.trim(), input.len());
            }
            "json-cat" => match std::fs::read_to_string(rest) {
                Ok(text) => println!("{}", json_string(&text)),
                Err(e) => {
                    eprintln!("cannot read {rest}: {e}");
                    std::process::exit(1);
                }
            },
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
            "post" => {
                let (n, url) = rest.split_once(':').unwrap_or(("0", rest));
                match http("POST", url, vec![b'x'; n.parse().unwrap_or(0)]) {
                    Ok((status, body)) => println!("OK post {status} {body}"),
                    Err(e) => println!("ERR post {e}"),
                }
            }
            "http-stall" | "http-unfinished" | "http-dropped-body" => match http_misuse(verb, rest) {
                Ok(outcome) => println!("OK {verb} {outcome}"),
                Err(e) => println!("ERR {verb} {e}"),
            },
            "http-hold" => {
                let (n, url) = rest.split_once(':').unwrap_or(("0", rest));
                match http_hold(n.parse().unwrap_or(0), url) {
                    Ok(held) => println!("OK http-hold {held}"),
                    Err(e) => println!("ERR http-hold {e}"),
                }
            }
            "get" => match http("GET", rest, Vec::new()) {
                Ok((status, body)) => println!("OK get {status} {body}"),
                Err(e) => println!("ERR get {e}"),
            },
            other => println!("UNKNOWN {other}"),
        }
    }
}

fn recurse(n: u64) -> u64 {
    let mut pad = [n; 64];
    pad[0] = std::hint::black_box(n);
    if pad[0] == 0 { 0 } else { recurse(n + 1) + pad[63] }
}

#[cfg(all(target_os = "wasi", target_env = "p2"))]
fn http(method: &str, url: &str, body: Vec<u8>) -> Result<(u16, String), String> {
    use wasi::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
    use wasi::io::streams::StreamError;
    let (scheme, rest) = url.split_once("://").ok_or("no scheme")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    let method = if method == "POST" { Method::Post } else { Method::Get };
    request.set_method(&method).map_err(|()| "method")?;
    let scheme = if scheme == "https" { Scheme::Https } else { Scheme::Http };
    request.set_scheme(Some(&scheme)).map_err(|()| "scheme")?;
    request.set_authority(Some(authority)).map_err(|()| "authority")?;
    request.set_path_with_query(Some(path)).map_err(|()| "path")?;
    let outgoing = request.body().map_err(|()| "request body")?;
    let future = wasi::http::outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    {
        let stream = outgoing.write().map_err(|()| "request stream")?;
        for chunk in body.chunks(4096) {
            stream.blocking_write_and_flush(chunk).map_err(|e| format!("{e:?}"))?;
        }
    }
    OutgoingBody::finish(outgoing, None).map_err(|e| format!("{e:?}"))?;
    future.subscribe().block();
    let response = future
        .get()
        .ok_or("no response")?
        .map_err(|()| "response taken twice")?
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    let body = response.consume().map_err(|()| "body")?;
    let stream = body.stream().map_err(|()| "stream")?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(e) => return Err(format!("{e:?}")),
        }
    }
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// Uses an outgoing request's body the way `verb` says (see the module documentation); returns how the response
/// ended, if it ever does.
#[cfg(all(target_os = "wasi", target_env = "p2"))]
fn http_misuse(verb: &str, url: &str) -> Result<String, String> {
    use wasi::http::types::{Fields, Method, OutgoingRequest, Scheme};
    let (authority, path) = url.trim_start_matches("http://").split_once('/').unwrap_or((url, ""));
    let request = OutgoingRequest::new(Fields::new());
    request.set_method(&Method::Post).map_err(|()| "method")?;
    request.set_scheme(Some(&Scheme::Http)).map_err(|()| "scheme")?;
    request.set_authority(Some(authority)).map_err(|()| "authority")?;
    request.set_path_with_query(Some(&format!("/{path}"))).map_err(|()| "path")?;
    let body = request.body().map_err(|()| "request body")?;
    if verb == "http-stall" {
        let stream = body.write().map_err(|()| "request stream")?;
        for _ in 0..64 {
            stream.blocking_write_and_flush(&[b'x'; 4096]).map_err(|e| format!("{e:?}"))?;
        }
        return Ok("wrote 64 chunks before handing the request over".into());
    }
    let future = wasi::http::outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    {
        let stream = body.write().map_err(|()| "request stream")?;
        stream.blocking_write_and_flush(&[b'x'; 16]).map_err(|e| format!("{e:?}"))?;
    }
    if verb == "http-dropped-body" {
        drop(body);
    }
    future.subscribe().block();
    match future.get() {
        Some(Ok(Ok(response))) => Ok(format!("status {}", response.status())),
        Some(Ok(Err(e))) => Err(format!("{e:?}")),
        Some(Err(())) => Err("response taken twice".into()),
        None => Err("no response".into()),
    }
}

/// Sends `n` GETs to `url` one after another and keeps every response, its body unread; returns how many it holds.
#[cfg(all(target_os = "wasi", target_env = "p2"))]
fn http_hold(n: usize, url: &str) -> Result<usize, String> {
    use wasi::http::types::{Fields, OutgoingBody, OutgoingRequest, Scheme};
    let (authority, path) = url.trim_start_matches("http://").split_once('/').unwrap_or((url, ""));
    let mut held = Vec::new();
    for i in 0..n {
        let request = OutgoingRequest::new(Fields::new());
        request.set_scheme(Some(&Scheme::Http)).map_err(|()| "scheme")?;
        request.set_authority(Some(authority)).map_err(|()| "authority")?;
        request.set_path_with_query(Some(&format!("/{path}"))).map_err(|()| "path")?;
        let body = request.body().map_err(|()| "request body")?;
        let future = wasi::http::outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
        OutgoingBody::finish(body, None).map_err(|e| format!("{e:?}"))?;
        future.subscribe().block();
        match future.get() {
            Some(Ok(Ok(response))) => held.push(response),
            Some(Ok(Err(e))) => return Err(format!("after {i}: {e:?}")),
            Some(Err(())) => return Err("response taken twice".into()),
            None => return Err(format!("after {i}: no response")),
        }
    }
    Ok(held.len())
}

#[cfg(not(all(target_os = "wasi", target_env = "p2")))]
fn http_hold(_n: usize, _url: &str) -> Result<usize, String> {
    Err("modules have no network".into())
}

#[cfg(not(all(target_os = "wasi", target_env = "p2")))]
fn http_misuse(_verb: &str, _url: &str) -> Result<String, String> {
    Err("modules have no network".into())
}

#[cfg(not(all(target_os = "wasi", target_env = "p2")))]
fn http(_method: &str, _url: &str, _body: Vec<u8>) -> Result<(u16, String), String> {
    Err("modules have no network".into())
}

/// `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
