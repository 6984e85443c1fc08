//! Which backend runs the graphs: `--device auto|gpu|cpu`.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

#[cfg(feature = "cpu")]
use super::cpu::CpuBackend;
#[cfg(feature = "gpu")]
use super::gpu::{GpuBackend, GpuError, GpuOptions};
use super::{Backend, RunLimits};

/// Where graphs run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Device {
    /// A hardware GPU when one exists, the CPU backend otherwise.
    #[default]
    Auto,
    /// A GPU, or an error saying why none can be used.
    Gpu,
    /// The CPU backend, without looking for a GPU.
    Cpu,
}

impl FromStr for Device {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Device::Auto),
            "gpu" => Ok(Device::Gpu),
            "cpu" => Ok(Device::Cpu),
            other => Err(format!("unknown device `{other}`: expected auto, gpu or cpu")),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Device::Auto => "auto",
            Device::Gpu => "gpu",
            Device::Cpu => "cpu",
        })
    }
}

/// The backend chosen for a device, and one line saying which it is and why.
pub struct ChosenBackend {
    pub backend: Arc<dyn Backend>,
    pub description: String,
}

/// Why no backend could be chosen for a device.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[cfg(feature = "gpu")]
    #[error(transparent)]
    Gpu(#[from] GpuError),
    /// The backend was left out at build time.
    #[error(
        "this refacen was built without the {backend} backend (cargo feature `{backend}`); \
         use another --device, or build with `--features {backend}`"
    )]
    NotBuilt { backend: &'static str },
}

/// Chooses the backend for `device`. `allow_software` lets a software rasterizer (lavapipe)
/// count as a GPU: it runs the GPU kernels correctly but slower than the CPU backend, which is
/// what tests on machines without a GPU want and operators never do.
pub fn choose_backend(
    device: Device,
    allow_software: bool,
    limits: RunLimits,
) -> Result<ChosenBackend, DeviceError> {
    match device {
        Device::Cpu => cpu_backend(limits, String::new()),
        Device::Gpu => gpu_backend(allow_software, limits),
        Device::Auto => auto_backend(allow_software, limits),
    }
}

#[cfg(feature = "cpu")]
fn cpu_backend(limits: RunLimits, why: String) -> Result<ChosenBackend, DeviceError> {
    let threads = rayon::current_num_threads();
    Ok(ChosenBackend {
        backend: Arc::new(CpuBackend::new(limits)),
        description: format!("CPU backend ({threads} threads){why}"),
    })
}

#[cfg(not(feature = "cpu"))]
fn cpu_backend(_: RunLimits, _: String) -> Result<ChosenBackend, DeviceError> {
    Err(DeviceError::NotBuilt { backend: "cpu" })
}

#[cfg(feature = "gpu")]
fn gpu_backend(allow_software: bool, limits: RunLimits) -> Result<ChosenBackend, DeviceError> {
    let gpu = GpuBackend::new(GpuOptions { allow_software, limits })?;
    Ok(ChosenBackend { description: gpu.describe(), backend: Arc::new(gpu) })
}

#[cfg(not(feature = "gpu"))]
fn gpu_backend(_: bool, _: RunLimits) -> Result<ChosenBackend, DeviceError> {
    Err(DeviceError::NotBuilt { backend: "gpu" })
}

/// A hardware GPU when one qualifies, else the CPU backend, saying why.
#[cfg(feature = "gpu")]
fn auto_backend(allow_software: bool, limits: RunLimits) -> Result<ChosenBackend, DeviceError> {
    match GpuBackend::new(GpuOptions { allow_software, limits }) {
        Ok(gpu) => Ok(ChosenBackend { description: gpu.describe(), backend: Arc::new(gpu) }),
        Err(GpuError::NoAdapter { found }) if found.is_empty() => {
            cpu_backend(limits, ", no GPU found".into())
        }
        Err(GpuError::NoAdapter { found }) => {
            let seen: Vec<&str> = found.iter().map(|r| r.adapter.as_str()).collect();
            cpu_backend(limits, format!(", no hardware GPU among: {}", seen.join("; ")))
        }
        Err(e) => cpu_backend(limits, format!(", the GPU could not be used: {e}")),
    }
}

#[cfg(not(feature = "gpu"))]
fn auto_backend(_: bool, limits: RunLimits) -> Result<ChosenBackend, DeviceError> {
    cpu_backend(limits, ", built without the GPU backend".into())
}

/// Sizes the thread pool the CPU backend runs every graph on (rayon's global pool, shared by
/// all guest instances), once per process and before any graph runs. `None` leaves rayon's
/// default: `RAYON_NUM_THREADS` when set, else one thread per CPU. Returns the threads in
/// force, which are the first call's when the pool was already sized.
pub fn set_threads(threads: Option<usize>) -> usize {
    let mut pool = rayon::ThreadPoolBuilder::new().thread_name(|i| format!("refacen-nn-{i}"));
    if let Some(threads) = threads {
        pool = pool.num_threads(threads);
    }
    // An error means the pool exists already (a second runtime in one process): keep it.
    let _ = pool.build_global();
    rayon::current_num_threads()
}
