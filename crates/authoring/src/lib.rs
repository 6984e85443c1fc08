//! What a guest author gets from refacen, beside the `kit` crate the guest itself depends on:
//!
//! - [`check`]: the conformance harness of `refacen guests check`: a guest's world, imports
//!   and `info`, its answers on sample photos or faces (and on odd synthetic ones) against the
//!   contract the host enforces, determinism, time and memory per call, each parameter at its
//!   default and at another value, and its refusal of bad values;
//! - [`scaffold`]: `refacen guests new`, a crate that builds with one `cargo build --release`
//!   into a working guest, with the kit vendored so that it depends on nothing in this
//!   repository.

pub mod check;
mod samples;
pub mod scaffold;

pub use check::{Check, CheckError, CheckOptions, Reason, Report, Row, Status};
pub use scaffold::{GuestKind, ScaffoldError, component_path, new_guest};
