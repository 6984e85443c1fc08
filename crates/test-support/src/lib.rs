//! What refacen's tests and benchmarks share: the repository's paths, real test servers
//! (Tarantool; MongoDB's wire protocol through smongo lives with the end-to-end tests), synthetic
//! Uploads made from the sample photos, synthetic store records, deterministic random values, and memory-sampled runs of the
//! binary.

pub mod random;
pub mod records;
pub mod soak;
pub mod tarantool;
pub mod uploads;

use std::path::{Path, PathBuf};

/// The repository's root directory (this crate is `crates/test-support`).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository around crates/test-support")
}
