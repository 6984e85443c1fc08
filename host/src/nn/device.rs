//! Which backend runs the graphs: `--device auto|gpu|cpu`.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use super::cpu::CpuBackend;
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

/// Chooses the backend for `device`. `allow_software` lets a software rasterizer (lavapipe)
/// count as a GPU: it runs the GPU kernels correctly but slower than the CPU backend, which is
/// what tests on machines without a GPU want and operators never do.
pub fn choose_backend(
    device: Device,
    allow_software: bool,
    limits: RunLimits,
) -> Result<ChosenBackend, GpuError> {
    let cpu = |why: String| {
        let backend = CpuBackend::new(limits);
        let threads = rayon::current_num_threads();
        ChosenBackend {
            backend: Arc::new(backend),
            description: format!("CPU backend ({threads} threads){why}"),
        }
    };
    match device {
        Device::Cpu => Ok(cpu(String::new())),
        Device::Gpu => {
            let gpu = GpuBackend::new(GpuOptions { allow_software, limits })?;
            Ok(ChosenBackend { description: gpu.describe(), backend: Arc::new(gpu) })
        }
        Device::Auto => match GpuBackend::new(GpuOptions { allow_software, limits }) {
            Ok(gpu) => Ok(ChosenBackend { description: gpu.describe(), backend: Arc::new(gpu) }),
            Err(GpuError::NoAdapter { found }) if found.is_empty() => Ok(cpu(", no GPU found".into())),
            Err(GpuError::NoAdapter { found }) => {
                let seen: Vec<&str> = found.iter().map(|r| r.adapter.as_str()).collect();
                Ok(cpu(format!(", no hardware GPU among: {}", seen.join("; "))))
            }
            Err(e) => Ok(cpu(format!(", the GPU could not be used: {e}"))),
        },
    }
}
