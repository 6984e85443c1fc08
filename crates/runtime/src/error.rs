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
    #[error(
        "it did not start and answer `info` within {} ms; `info` must answer at once (a guest \
         loads its weights on its first call instead)",
        .0.as_millis()
    )]
    InfoTimeout(Duration),
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
    InvalidAnswer(#[source] super::contract::Violation),
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
    /// that a smaller input may succeed. Since detectors have the host make their pyramids
    /// (`area`), a large photo's memory is the host's: the work and memory of its computes,
    /// and what all instances hold together, grow with it as a guest's own memory does.
    pub fn is_size_bound(&self) -> bool {
        matches!(
            self,
            GuestFailure::MemoryLimit { .. }
                | GuestFailure::HostcallDataLimit { .. }
                | GuestFailure::NnCost(_)
                | GuestFailure::NnProcess(_)
        )
    }

    /// The cause, as summaries count it.
    pub fn kind(&self) -> GuestFailureKind {
        use GuestFailureKind as K;
        match self {
            GuestFailure::Timeout(_) | GuestFailure::InfoTimeout(_) => K::Timeout,
            GuestFailure::OutOfFuel(_) => K::OutOfFuel,
            GuestFailure::MemoryLimit { .. } => K::MemoryLimit,
            GuestFailure::HostcallDataLimit { .. } => K::HostcallDataLimit,
            GuestFailure::NnCost(_) => K::NnCost,
            GuestFailure::NnProcess(_) => K::NnProcess,
            GuestFailure::Panic { .. } => K::Panic,
            GuestFailure::Trap { .. } => K::Trap,
            GuestFailure::Reported(Reported::InvalidInput(_)) => K::InputRefused,
            GuestFailure::Reported(Reported::InvalidParam(_)) => K::ParamRefused,
            GuestFailure::Reported(Reported::Nn(_)) => K::Nn,
            GuestFailure::Reported(Reported::Internal(_)) => K::Internal,
            GuestFailure::Instantiate(_) => K::Instantiate,
            GuestFailure::InvalidAnswer(_) => K::InvalidAnswer,
        }
    }
}

/// What kind of [`GuestFailure`] a call ended in, without its details.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GuestFailureKind {
    Timeout,
    OutOfFuel,
    MemoryLimit,
    HostcallDataLimit,
    NnCost,
    NnProcess,
    Panic,
    Trap,
    InputRefused,
    ParamRefused,
    Nn,
    Internal,
    Instantiate,
    InvalidAnswer,
}

impl GuestFailureKind {
    /// The cause as summaries name it.
    pub fn as_str(self) -> &'static str {
        use GuestFailureKind as K;
        match self {
            K::Timeout => "guest timeout",
            K::OutOfFuel => "guest out of fuel",
            K::MemoryLimit => "guest memory limit",
            K::HostcallDataLimit => "guest host-call data limit",
            K::NnCost => "guest neural-network work limit",
            K::NnProcess => "guest neural-network process limit",
            K::Panic => "guest panic",
            K::Trap => "guest trap",
            K::InputRefused => "input refused by guest",
            K::ParamRefused => "parameter refused by guest",
            K::Nn => "neural-network error",
            K::Internal => "guest internal error",
            K::Instantiate => "guest instantiation",
            K::InvalidAnswer => "invalid guest answer",
        }
    }
}
