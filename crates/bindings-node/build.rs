//! Links the addon the way Node loads it (napi-build).

fn main() {
    napi_build::setup();
}
