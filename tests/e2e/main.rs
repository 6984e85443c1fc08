//! End-to-end tests: the `refacen` binary on real photos with real guests.
//!
//! Guests must be built first (`cargo xtask guests`, which `scripts/test` runs); a missing
//! guest fails the test with that instruction rather than skipping it.

mod bad_input;
mod cluster;
mod deploy;
mod dlib_detector;
mod dlib_model;
mod drop_in;
mod facenet;
mod gpu;
mod long_runs;
mod many_cores;
mod operator;
mod parity;
mod regenerate;
mod reliability;
mod report;
mod sandbox;
mod servers;
#[path = "../support/soak.rs"]
mod soak;
mod stores;
mod support;
mod swap;
#[path = "../support/uploads.rs"]
mod synthetic;
mod uploads;
