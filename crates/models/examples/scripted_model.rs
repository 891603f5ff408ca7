//! A stand-in for a local OpenAI-compatible model server, to try `wasmagent agent` without a model: it serves
//! `POST /v1/chat/completions` on 127.0.0.1 (streamed, like llama.cpp's `llama-server`) and answers from a script,
//! not a model: first a call of `execute_code` with a program that sums the squares of the first 100 primes, then a
//! closing sentence. It checks every request against OpenAI's published request schema and prints what it found.
//!
//! ```sh
//! cargo run -p wasmagent-models --example scripted_model -- 8080
//! ```

use serde_json::json;
use std::time::Duration;
use wasmagent_models::testing::{Reply, ScriptedServer, Wire};

const PROGRAM: &str = "const primes = [];\n\
    for (let n = 2; primes.length < 100; n++) if (primes.every(p => n % p !== 0)) primes.push(n);\n\
    primes.reduce((sum, p) => sum + p * p, 0)";

fn main() {
    let port = match std::env::args().nth(1).map(|p| p.parse::<u16>()) {
        None => 8080,
        Some(Ok(port)) => port,
        Some(Err(_)) => {
            eprintln!("usage: scripted_model [PORT]   (default 8080)");
            std::process::exit(2);
        }
    };
    let script = vec![
        Reply::ToolCalls {
            text: "I will compute it.".to_owned(),
            calls: vec![("execute_code".to_owned(), json!({"language": "javascript", "code": PROGRAM}).to_string())],
        },
        Reply::Text("The program's value (in its code_run step) is the sum.".to_owned()),
    ];
    let server = ScriptedServer::start_on(port, Wire::OpenAi, script);
    println!("scripted model on {} (one agent run; restart it for another)", server.base_url());
    let mut seen = 0;
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let requests = server.requests();
        for (n, request) in requests.iter().enumerate().skip(seen) {
            let verdict = if request.schema_errors.is_empty() {
                "valid against OpenAI's schema".to_owned()
            } else {
                request.schema_errors.join("; ")
            };
            println!(
                "request {}: {} messages, {verdict}",
                n + 1,
                request.body["messages"].as_array().map_or(0, Vec::len)
            );
        }
        seen = requests.len();
    }
}
