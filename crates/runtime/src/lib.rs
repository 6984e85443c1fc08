//! The guest runtime: loads detector and embedder components, checks what they implement,
//! caches their compiled code, and runs them in a sandbox whose only doors are wasi-nn and the
//! host's area resampling (`area`).

pub mod area;
mod bindings;
mod cache;
pub mod contract;
mod detector;
mod directory;
mod embedder;
mod error;
mod loaded;
mod nn_ledger;
mod sandbox;
mod session;
mod trust;
pub mod wasi_nn;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{Config, Engine};

pub use cache::CodeCache;
pub use detector::Detector;
pub use directory::{GuestDirectory, GuestEntry, GuestInfo, default_guest_dir};
pub use embedder::Embedder;
pub use error::{GuestError, GuestFailure, GuestFailureKind, LoadError, Reported};
pub use loaded::Loaded;
pub use nn_ledger::{ProcessNnLimitExceeded, ProcessNnLimits, ProcessNnUsage};
pub use sandbox::GuestLimits;
pub use session::CallStats;
pub use trust::{TrustList, TrustListError};
pub use wasi_nn::{NnHost, NnLimits, NnUsage};

use sandbox::GuestState;

/// Which refacen world a component implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum World {
    Detector,
    Embedder,
}

impl World {
    pub fn describe(self) -> &'static str {
        match self {
            World::Detector => "a detector",
            World::Embedder => "a model (embedder)",
        }
    }

    pub fn noun(self) -> &'static str {
        match self {
            World::Detector => "detector",
            World::Embedder => "model",
        }
    }
}

/// Interval of the epoch ticker; per-call time limits are counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// How long a guest may take to instantiate and answer `info` (or `--guest-timeout-ms`, when
/// shorter). `info` is a constant answer: a guest that is slow there (one loading its weights
/// before its first call, or one that never answers) would otherwise hold up, for the whole
/// per-call limit, every run that looks a guest up by name in its directory.
pub const INFO_TIMEOUT: Duration = Duration::from_secs(10);

/// Epoch ticks for a call of at most `timeout`.
fn deadline_ticks(timeout: Duration) -> u64 {
    (timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64 + 1
}

/// Compiles and instantiates guests. One per process; cheap to share behind an `Arc`.
pub struct GuestRuntime {
    engine: Engine,
    linker: Linker<GuestState>,
    nn: Arc<NnHost>,
    limits: GuestLimits,
    cache: CodeCache,
    trusted: Option<TrustList>,
    ticker: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

/// A compiled guest component, ready to instantiate.
pub struct GuestComponent {
    pub path: PathBuf,
    /// Lowercase hex sha256 of the `.wasm` file: the guest's identity in provenance records.
    pub sha256: String,
    pub world: World,
    /// The interfaces it imports (`wasi:nn/graph@…`, the WASI interfaces Rust's std uses…),
    /// every one of them linked, or it would not have loaded.
    pub imports: Vec<String>,
    pre: InstancePre<GuestState>,
}

impl GuestComponent {
    /// The file name, for messages.
    pub fn file_name(&self) -> String {
        self.path
            .file_name()
            .map_or_else(|| self.path.display().to_string(), |f| f.to_string_lossy().into_owned())
    }
}

impl GuestRuntime {
    pub fn new(nn: Arc<NnHost>, limits: GuestLimits, cache: CodeCache) -> anyhow::Result<Self> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.consume_fuel(limits.fuel.is_some());
        config.wasm_component_model(true);
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        wasi_nn::add_to_linker(&mut linker, GuestState::nn_view)?;

        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let engine = engine.clone();
            let stop = stop.clone();
            std::thread::Builder::new().name("refacen-epoch".into()).spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })?
        };
        Ok(GuestRuntime { engine, linker, nn, limits, cache, trusted: None, ticker: Some((stop, ticker)) })
    }

    /// Refuses every guest whose digest `list` does not hold.
    pub fn trusting(mut self, list: TrustList) -> Self {
        self.trusted = Some(list);
        self
    }

    pub fn limits(&self) -> &GuestLimits {
        &self.limits
    }

    pub fn nn_backend(&self) -> &str {
        self.nn.backend_name()
    }

    /// Whether the networks run on another device than the host's cores (a GPU).
    pub fn nn_offloads(&self) -> bool {
        self.nn.backend_offloads()
    }

    /// Loads a guest file: checks it is a component, compiles it (or reuses cached code),
    /// finds which world it implements and links its imports.
    pub fn load(&self, path: &Path) -> Result<Arc<GuestComponent>, LoadError> {
        let bytes =
            std::fs::read(path).map_err(|source| LoadError::Read { path: path.to_path_buf(), source })?;
        check_component_header(path, &bytes)?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        if let Some(list) = self.trusted.as_ref().filter(|l| !l.trusts(&sha256)) {
            return Err(LoadError::Untrusted {
                path: path.to_path_buf(),
                sha256,
                list: list.path().to_path_buf(),
            });
        }
        let component = self
            .cache
            .get_or_compile(&self.engine, &sha256, &bytes)
            .map_err(|e| LoadError::Compile { path: path.to_path_buf(), reason: format!("{e:#}") })?;
        let world = classify(path, &self.engine, &component)?;
        let imports =
            component.component_type().imports(&self.engine).map(|(name, _)| name.to_string()).collect();
        let pre = self.linker.instantiate_pre(&component).map_err(|e| {
            let text = format!("{e:#}");
            // wasmtime names the first unsatisfied import in its message.
            let import = text.split('`').nth(1).map(str::to_string).unwrap_or_else(|| text.clone());
            LoadError::Import { path: path.to_path_buf(), import }
        })?;
        Ok(Arc::new(GuestComponent { path: path.to_path_buf(), sha256, world, imports, pre }))
    }

    /// A detector from a loaded component.
    pub fn detector(&self, component: Arc<GuestComponent>) -> Result<Detector, LoadError> {
        Detector::new(self, component)
    }

    /// An embedder from a loaded component.
    pub fn embedder(&self, component: Arc<GuestComponent>) -> Result<Embedder, LoadError> {
        Embedder::new(self, component)
    }
}

impl Drop for GuestRuntime {
    fn drop(&mut self) {
        if let Some((stop, handle)) = self.ticker.take() {
            stop.store(true, Ordering::Relaxed);
            let _ = handle.join();
        }
    }
}

/// Tells a core module or random bytes apart from a component, before wasmtime tries.
fn check_component_header(path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
    let not_component =
        |detail: &str| LoadError::NotAComponent { path: path.to_path_buf(), detail: detail.into() };
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(not_component(" (no WebAssembly header)"));
    }
    match &bytes[4..8] {
        [0x0d, 0x00, 0x01, 0x00] => Ok(()),
        [0x01, 0x00, 0x00, 0x00] => Err(not_component(" (it is a core WebAssembly module)")),
        _ => Err(not_component(" (unknown WebAssembly version)")),
    }
}

fn classify(path: &Path, engine: &Engine, component: &Component) -> Result<World, LoadError> {
    let ty = component.component_type();
    let exports: Vec<(String, bool)> = ty
        .exports(engine)
        .map(|(name, item)| (name.to_string(), matches!(item.ty, ComponentItem::ComponentFunc(_))))
        .collect();
    let has = |name: &str| exports.iter().any(|(n, is_func)| n == name && *is_func);
    match (has("detect"), has("embed")) {
        (true, false) => Ok(World::Detector),
        (false, true) => Ok(World::Embedder),
        _ => Err(LoadError::UnknownWorld {
            path: path.to_path_buf(),
            exports: if exports.is_empty() {
                "nothing".into()
            } else {
                exports.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
            },
        }),
    }
}
