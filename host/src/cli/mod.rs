//! The command line: one module per subcommand; this one holds the options they share.

pub mod detect;
pub mod guests;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::nn::RunLimits;
use crate::nn::cpu::CpuBackend;
use crate::runtime::{CodeCache, GuestLimits, GuestRuntime, NnHost, NnLimits, default_guest_dir};

#[derive(Parser, Debug)]
#[command(
    name = "refacen",
    version,
    about = "Regenerates a face database when its face detector or face-recognition model changes"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Detect faces in photos and print them.
    Detect(detect::DetectArgs),
    /// List the detectors and models in the guest directory.
    Guests(guests::GuestsArgs),
}

/// How guests are found and confined.
#[derive(Args, Debug, Clone)]
pub struct GuestArgs {
    /// Directory holding guest components (*.wasm), selectable by the name they declare.
    /// Default: `guests/` beside the refacen executable (or `../guests`).
    #[arg(long, env = "REFACEN_GUEST_DIR", value_name = "DIR")]
    pub guest_dir: Option<PathBuf>,

    /// Memory limit of each guest instance, in MiB.
    #[arg(long, default_value_t = 1024, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub guest_memory_mb: u64,

    /// Time limit of one call into a guest (one photo, one batch of faces), in milliseconds.
    #[arg(long, default_value_t = 60_000, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub guest_timeout_ms: u64,

    /// Optional deterministic instruction budget ("fuel") per guest call; unmetered if unset.
    #[arg(long, value_name = "UNITS", value_parser = clap::value_parser!(u64).range(1..))]
    pub guest_fuel: Option<u64>,

    /// Where compiled guest code is cached (default: $XDG_CACHE_HOME/refacen or ~/.cache/refacen).
    #[arg(long, env = "REFACEN_CACHE_DIR", value_name = "DIR", conflicts_with = "no_cache")]
    pub cache_dir: Option<PathBuf>,

    /// Compile guests on every start instead of caching their code on disk.
    #[arg(long)]
    pub no_cache: bool,
}

impl GuestArgs {
    pub fn guest_dir(&self) -> PathBuf {
        self.guest_dir.clone().unwrap_or_else(default_guest_dir)
    }

    pub fn limits(&self) -> GuestLimits {
        GuestLimits {
            memory_bytes: (self.guest_memory_mb << 20) as usize,
            call_timeout: Duration::from_millis(self.guest_timeout_ms),
            fuel: self.guest_fuel,
        }
    }

    /// The guest runtime with the CPU neural-network backend.
    pub fn runtime(&self) -> anyhow::Result<GuestRuntime> {
        let backend = Arc::new(CpuBackend::new(RunLimits::default()));
        let nn = Arc::new(NnHost::new(backend, NnLimits::default()));
        let cache_dir =
            if self.no_cache { None } else { self.cache_dir.clone().or_else(CodeCache::default_dir) };
        GuestRuntime::new(nn, self.limits(), CodeCache::new(cache_dir))
    }
}
