//! The command line: one module per subcommand; this one holds the options they share.

mod config;
pub mod detect;
pub mod embed;
pub mod faces;
pub mod guests;
pub mod output;
pub mod regenerate;
pub mod report;
mod run_record;
pub mod scale;
pub mod search;
pub mod snapshot;
pub mod spaces;
pub mod status;
pub mod stores;
pub mod sync_search;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use refacen_nn::{Device, RunLimits, choose_backend};
use refacen_runtime::{
    CodeCache, GuestLimits, GuestRuntime, NnHost, NnLimits, ProcessNnLimits, TrustList, default_guest_dir,
};

#[derive(Parser, Debug)]
#[command(
    name = "refacen",
    version,
    about = "Regenerates a face database when its face detector or face-recognition model changes"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Print errors with their whole chain of causes, the database drivers' own errors among them.
    #[arg(short, long, global = true)]
    pub verbose: bool,
}

// Parsed once per process: the size of its largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Detect faces in photos and print them.
    Detect(detect::DetectArgs),
    /// Compute facens of normalized faces.
    Embed(embed::EmbedArgs),
    /// Regenerate normalized faces, thumbnails and facens from an Uploads directory.
    #[command(args_override_self = true)]
    Regenerate(regenerate::RegenerateArgs),
    /// How far a migration is: photos done and to do, failures, faces, and each shard's progress.
    Status(status::StatusArgs),
    /// Find the stored faces nearest to the faces of a photo.
    Search(search::SearchArgs),
    /// List the face records of a face store.
    Faces(faces::FacesArgs),
    /// Copy a model's facens from the face store to the search store; switch search to them.
    SyncSearch(sync_search::SyncSearchArgs),
    /// List the facen spaces of the search store.
    Spaces(spaces::SpacesArgs),
    /// List the detectors and models in the guest directory.
    Guests(guests::GuestsArgs),
    /// Write the face store (records, provenance, thumbnails) to one file, for `report`.
    Snapshot(snapshot::SnapshotArgs),
    /// Compare two snapshots: an HTML page and JSON of what a detector or model swap changes.
    Report(report::ReportArgs),
}

impl Cli {
    /// Parses the command line, with `regenerate --config FILE` expanded into options.
    pub fn parse_with_config() -> anyhow::Result<Self> {
        use clap::{CommandFactory, FromArgMatches};
        let command = Cli::command();
        let known: Vec<String> = command
            .find_subcommand("regenerate")
            .expect("regenerate exists")
            .get_arguments()
            .filter_map(|a| a.get_long().map(str::to_string))
            .collect();
        let args = config::expand(std::env::args_os().collect(), "regenerate", &known)?;
        let matches = command.get_matches_from(args);
        Ok(Cli::from_arg_matches(&matches)?)
    }
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

    /// Most neural-network work the host does for one guest call, in GFLOP (estimated from
    /// the shapes before each compute, which is refused when it would go over).
    #[arg(long, default_value_t = 4000, value_name = "GFLOP", value_parser = clap::value_parser!(u64).range(1..))]
    pub guest_nn_gflop_per_call: u64,

    /// Most memory one neural-network compute of a guest may take in the host, in MiB
    /// (estimated likewise).
    #[arg(long, default_value_t = 8192, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..))]
    pub guest_nn_memory_mb: u64,

    /// Most memory all guest instances together may hold in the host through wasi-nn (graphs,
    /// tensors, running computes), in MiB; default three quarters of the machine's memory.
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..))]
    pub guest_nn_process_mb: Option<u64>,

    /// Optional deterministic instruction budget ("fuel") per guest call; unmetered if unset.
    #[arg(long, value_name = "UNITS", value_parser = clap::value_parser!(u64).range(1..))]
    pub guest_fuel: Option<u64>,

    /// Where compiled guest code is cached (default: $XDG_CACHE_HOME/refacen or ~/.cache/refacen).
    #[arg(long, env = "REFACEN_CACHE_DIR", value_name = "DIR", conflicts_with = "no_cache")]
    pub cache_dir: Option<PathBuf>,

    /// Compile guests on every start instead of caching their code on disk.
    #[arg(long)]
    pub no_cache: bool,

    /// Where the guests' neural networks run: `auto` (a hardware GPU through Vulkan, Metal or
    /// DX12 when there is one, else the CPU), `gpu` (fail when there is none) or `cpu`.
    #[arg(long, env = "REFACEN_DEVICE", default_value_t = Device::Auto, value_name = "auto|gpu|cpu")]
    pub device: Device,

    /// Run only guests whose sha256 this file lists (`sha256sum` lines: `<digest>  <file>`);
    /// any other is refused before its code runs.
    #[arg(long, env = "REFACEN_TRUSTED_GUESTS", value_name = "FILE")]
    pub trusted_guests: Option<PathBuf>,

    /// Threads of the CPU backend's pool, shared by every guest instance (default:
    /// $RAYON_NUM_THREADS when set, else one per CPU). The number of photos worked on at once
    /// (`--concurrency`, `--jobs`) follows from it unless given.
    #[arg(long, env = "REFACEN_THREADS", value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,

    /// Count a software rasterizer (e.g. Mesa's lavapipe) as a GPU. It runs the GPU kernels
    /// correctly but slower than the CPU backend: for testing on machines without a GPU.
    #[arg(long, env = "REFACEN_GPU_ALLOW_SOFTWARE", value_parser = clap::builder::BoolishValueParser::new())]
    pub gpu_allow_software: bool,
}

/// How many photos to work on at once when the operator does not say: on a GPU the cores
/// only decode and pre/post-process, one photo each; on the CPU backend every graph already
/// spreads over the pool, and a few photos per pair of threads keep it busy between graphs
/// (the guests' own code and the small pyramid levels run on one thread each).
pub fn default_concurrency(runtime: &GuestRuntime) -> usize {
    let threads = rayon::current_num_threads();
    if runtime.nn_offloads() { threads.clamp(1, 32) } else { (threads / 2).clamp(2, 16) }
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

    /// The guest runtime, its networks on the backend `--device` chooses (said on stderr).
    pub fn runtime(&self) -> anyhow::Result<GuestRuntime> {
        refacen_nn::set_threads(self.threads.map(usize::from));
        let chosen = choose_backend(self.device, self.gpu_allow_software, RunLimits::default())
            .map_err(|e| anyhow::anyhow!("--device {}: {e}", self.device))?;
        eprintln!("refacen: networks run on the {}", chosen.description);
        let nn_limits = NnLimits {
            max_flops_per_call: self.guest_nn_gflop_per_call.saturating_mul(1_000_000_000),
            max_compute_bytes: self.guest_nn_memory_mb << 20,
            ..NnLimits::default()
        };
        let nn_limits = match self.guest_nn_process_mb {
            Some(mb) => NnLimits {
                process: ProcessNnLimits { max_bytes: mb << 20, ..nn_limits.process },
                ..nn_limits
            },
            None => nn_limits,
        };
        let nn = Arc::new(NnHost::new(chosen.backend, nn_limits));
        let cache_dir =
            if self.no_cache { None } else { self.cache_dir.clone().or_else(CodeCache::default_dir) };
        let runtime = GuestRuntime::new(nn, self.limits(), CodeCache::new(cache_dir))?;
        Ok(match &self.trusted_guests {
            Some(path) => runtime.trusting(TrustList::read(path)?),
            None => runtime,
        })
    }
}
