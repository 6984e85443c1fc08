//! refacen: regenerates a face database when its face detector or face-recognition model
//! changes. Detectors and models are sandboxed WebAssembly components; their neural networks
//! run in the host through wasi-nn.
//!
//! This package is the command line ([`cli`]); the work is done by the crates under `crates/`,
//! re-exported here under their short names so that tests and embedders can reach them through
//! one dependency, as `wasmtime` does for its own crates.

pub mod cli;

pub use refacen_authoring as authoring;
pub use refacen_face as face;
pub use refacen_imaging as imaging;
pub use refacen_nn as nn;
pub use refacen_pipeline as pipeline;
pub use refacen_report as report;
pub use refacen_runtime as runtime;
pub use refacen_store as store;
