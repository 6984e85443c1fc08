//! refacen: regenerates a face database when its face detector or face-recognition model
//! changes. Detectors and models are sandboxed WebAssembly components; their neural networks
//! run in the host through wasi-nn.

pub mod cli;
pub mod face;
pub mod imaging;
pub mod nn;
pub mod pipeline;
pub mod report;
pub mod runtime;
pub mod store;
