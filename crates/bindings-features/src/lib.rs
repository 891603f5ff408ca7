//! No code: this crate exists for its `Cargo.toml`, which lists dependency features so that building a language
//! binding alone (`cargo build -p wasmagent-python`, `-p wasmagent-node`) compiles every shared dependency with the
//! same features as `cargo test --workspace`, and so reuses that build's artifacts (the "workspace-hack" pattern of
//! cargo-hakari, kept by hand for the two bindings). It must never gain code or be depended on by the library crates.
