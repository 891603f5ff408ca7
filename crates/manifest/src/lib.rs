//! The `CapabilityManifest`: everything a sandboxed run is allowed to touch, and every limit it runs under.
//!
//! This crate owns the policy *types*: parsing (TOML or JSON), defaults, operator ceilings, validation and the
//! resolution of a manifest into an [`EffectiveManifest`] (absolute, canonical mounts; every limit filled in), plus
//! the digest that identifies an effective manifest in run reports and audit records.
//!
//! It must not execute anything: no wasmtime, no network, no async runtime. The only I/O it performs is the
//! filesystem inspection needed to resolve mount paths (existence, canonical form, symlink detection), in
//! [`CapabilityManifest::resolve`]. Kernels apply an [`EffectiveManifest`]; they never re-interpret a raw one.
//!
//! Deny by default: an empty manifest grants no files, no network, no environment and no tools, and every limit
//! has a finite default ([`defaults`]). Unknown fields are errors, so a typo can never silently change policy.
//!
//! ```
//! use wasmagent_manifest::{CapabilityManifest, ManifestCeilings};
//!
//! let raw = CapabilityManifest::from_toml_str(r#"
//!     cpu_ms = 2000
//!     memory_limit_bytes = "64MiB"
//!     env = { GREETING = "hello" }
//! "#)?;
//! let effective = raw.resolve(std::path::Path::new("."), &ManifestCeilings::default())?;
//! assert_eq!(effective.cpu_ms(), 2000);
//! assert_eq!(effective.memory_limit_bytes(), 64 * 1024 * 1024);
//! assert_eq!(effective.max_output_bytes(), wasmagent_manifest::defaults::MAX_OUTPUT_BYTES);
//! assert!(effective.digest().starts_with("sha256:"));
//! # Ok::<(), wasmagent_manifest::ManifestError>(())
//! ```

pub mod defaults;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod host_pattern;
mod mount;
mod raw;
mod resolve;
mod session;
mod size;

pub use defaults::ManifestCeilings;
pub use error::{Format, ManifestError};
pub use host_pattern::{HostPattern, HostPatternError, Scheme};
pub use mount::{Access, Mount};
pub use raw::CapabilityManifest;
pub use resolve::{CAPABILITY_KINDS, EffectiveManifest};
pub use session::SessionLimits;
pub use size::{ByteSize, ByteSizeError};
