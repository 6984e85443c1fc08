//! Errors of guest loading and guest calls. Every message names the guest (declared name and
//! file), the call, and the real cause, and says what the operator can do about it.

use std::path::PathBuf;
use std::time::Duration;

/// A guest file could not be made usable.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read guest {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error(
        "{path} is not a WebAssembly component{detail}; guests must be components built for \
         wasm32-wasip2 against refacen's wit/ (e.g. `cargo build --target wasm32-wasip2`)"
    )]
    NotAComponent { path: PathBuf, detail: String },
    #[error("{path} is a WebAssembly component but wasmtime cannot compile it: {reason}")]
    Compile { path: PathBuf, reason: String },
    #[error(
        "{path} implements neither the refacen:face `detector` nor the `embedder` world \
         (it exports: {exports}); see wit/refacen.wit"
    )]
    UnknownWorld { path: PathBuf, exports: String },
    #[error("{path} is {found}, but {expected} is needed here")]
    WrongWorld { path: PathBuf, found: &'static str, expected: &'static str },
    #[error(
        "{path} does not match refacen:face@0.1.0's {world} world: {reason}; rebuild the guest \
         against this version of wit/"
    )]
    Signature { path: PathBuf, world: &'static str, reason: String },
    #[error(
        "{path} imports {import}, which refacen does not provide: guests may import only \
         wasi:nn and the standard WASI interfaces of wasm32-wasip2"
    )]
    Import { path: PathBuf, import: String },
    #[error(
        "{path} (sha256 {sha256}) is not in the trusted-guest list {list}; refused before running. \
         Review it, then add its digest: sha256sum {path} >> {list}"
    )]
    Untrusted { path: PathBuf, sha256: String, list: PathBuf },
    #[error("{0}")]
    Call(#[from] GuestError),
    #[error("no {world} named `{name}` in guest directory {dir}{known}")]
    NotFound { world: &'static str, name: String, dir: PathBuf, known: String },
    #[error(
        "two guests in {dir} declare the {world} name `{name}`: {first} and {second}; remove one \
         or select it by path"
    )]
    Ambiguous { world: &'static str, name: String, dir: PathBuf, first: PathBuf, second: PathBuf },
    #[error("cannot read guest directory {dir}: {source}")]
    Directory { dir: PathBuf, source: std::io::Error },
}

/// A call into a guest failed. The instance that failed has been thrown away; the next call
/// gets a fresh one.
#[derive(Debug, thiserror::Error)]
#[error("guest `{guest}` ({file}) failed in {call}: {failure}")]
pub struct GuestError {
    pub guest: String,
    pub file: String,
    pub call: &'static str,
    pub failure: GuestFailure,
}

#[derive(Debug, thiserror::Error)]
pub enum GuestFailure {
    #[error("it ran past its time limit of {} ms per call (--guest-timeout-ms)", .0.as_millis())]
    Timeout(Duration),
    #[error("it used up its fuel of {0} per call (--guest-fuel)")]
    OutOfFuel(u64),
    #[error(
        "it tried to grow its memory to {} MiB, over the limit of {} MiB (--guest-memory-mb)",
        .requested_bytes >> 20, .limit_bytes >> 20
    )]
    MemoryLimit { requested_bytes: usize, limit_bytes: usize },
    /// wasmtime's bound on the data one call from the guest into the host may carry.
    #[error(
        "too much data is being copied between the host and the guest: more than {} MiB in one call \
         (the host-call data limit)",
        .limit_bytes >> 20
    )]
    HostcallDataLimit { limit_bytes: usize },
    /// A compute whose estimated work or memory is over the host's ceilings, refused before
    /// any of it was spent.
    #[error("{0}")]
    NnCost(super::wasi_nn::NnCostExceeded),
    /// What all guest instances hold in the host together would go over the process's
    /// ceiling.
    #[error("{0}")]
    NnProcess(super::ProcessNnLimitExceeded),
    #[error("it panicked: {message}")]
    Panic { message: String },
    #[error("it trapped: {reason}{}", log_suffix(.log))]
    Trap { reason: String, log: String },
    #[error("{0}")]
    Reported(Reported),
    #[error("it could not be instantiated: {0}")]
    Instantiate(String),
    #[error("it returned an invalid answer: {0}")]
    InvalidAnswer(String),
}

fn log_suffix(log: &str) -> String {
    if log.is_empty() { String::new() } else { format!("; its output ends with: {log}") }
}

/// An error the guest itself reported through its WIT `guest-error`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Reported {
    #[error("it refused the input: {0}")]
    InvalidInput(String),
    #[error("it refused a parameter: {0}")]
    InvalidParam(String),
    #[error("a neural-network call failed: {0}")]
    Nn(String),
    #[error("it reported an internal error: {0}")]
    Internal(String),
}

impl GuestFailure {
    /// Whether the guest ran out of a resource whose use grows with the input's size, so
    /// that a smaller input may succeed.
    pub fn is_size_bound(&self) -> bool {
        matches!(self, GuestFailure::MemoryLimit { .. } | GuestFailure::HostcallDataLimit { .. })
    }

    /// A short cause for summaries ("timeout", "trap", ...).
    pub fn kind(&self) -> &'static str {
        match self {
            GuestFailure::Timeout(_) => "guest timeout",
            GuestFailure::OutOfFuel(_) => "guest out of fuel",
            GuestFailure::MemoryLimit { .. } => "guest memory limit",
            GuestFailure::HostcallDataLimit { .. } => "guest host-call data limit",
            GuestFailure::NnCost(_) => "guest neural-network work limit",
            GuestFailure::NnProcess(_) => "guest neural-network process limit",
            GuestFailure::Panic { .. } => "guest panic",
            GuestFailure::Trap { .. } => "guest trap",
            GuestFailure::Reported(Reported::InvalidInput(_)) => "input refused by guest",
            GuestFailure::Reported(Reported::InvalidParam(_)) => "parameter refused by guest",
            GuestFailure::Reported(Reported::Nn(_)) => "neural-network error",
            GuestFailure::Reported(Reported::Internal(_)) => "guest internal error",
            GuestFailure::Instantiate(_) => "guest instantiation",
            GuestFailure::InvalidAnswer(_) => "invalid guest answer",
        }
    }
}
