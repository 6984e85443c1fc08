//! End-to-end tests: the `refacen` binary on real photos with real guests.
//!
//! Guests must be built first (`cargo xtask guests`, which `scripts/test` runs); a missing
//! guest fails the test with that instruction rather than skipping it.

mod app_fields;
mod bad_input;
mod cluster;
mod deploy;
mod dlib_detector;
mod dlib_model;
mod drop_in;
mod facenet;
mod gpu;
mod guest_check;
mod guest_kit;
mod long_runs;
mod many_cores;
mod nn_process;
mod operator;
mod other_languages;
mod parity;
mod regenerate;
mod reliability;
mod report;
mod sandbox;
mod servers;
mod stores;
mod support;
mod swap;
mod uploads;

use refacen_test_support::{soak, uploads as synthetic};
