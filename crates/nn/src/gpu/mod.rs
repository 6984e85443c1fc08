//! The wgpu compute backend: graphs run as WGSL kernels (`shaders/*.wgsl`) on a Vulkan,
//! Metal or DX12 adapter.
//!
//! - [`GpuBackend::new`] picks an adapter (discrete before integrated before virtual; a
//!   software rasterizer such as lavapipe only when [`GpuOptions::allow_software`]) and
//!   creates a device with the limits the kernels need, raised to what the adapter offers.
//! - `prepare` validates the graph, uploads every weight once (conv weights re-laid out for
//!   the conv kernel) and compiles the kernels it will need (`keys` says which kernel a node
//!   dispatches, for preparation and planning alike).
//! - `run` executes a *plan* for the input shapes: intermediates live in device buffers
//!   (taken from a pool, reused between layers as soon as a value is dead, and kept with the
//!   plan for the next run of the same shapes), bind groups and parameters are built once per
//!   plan, all dispatches go into one command buffer and one submission, and only the graph
//!   outputs are read back. Reshape, Flatten, Squeeze, Unsqueeze and Identity alias their
//!   input's buffer.
//! - Kernel parameters are `#[repr(C)]` structs (`params`) whose WGSL declarations the same
//!   macro writes and prepends to the shader files, with the storage buffers each kernel binds
//!   (from which the host builds its bind group layouts and bind groups); the `abi_tests` unit
//!   test checks the layouts agree and that each entry point uses exactly those buffers.
//!
//! The CPU backend (`nn::cpu`) defines the semantics; the op conformance suite runs on both.

mod abi;
#[cfg(test)]
mod abi_tests;
mod builder;
mod context;
mod exec;
mod kernels;
mod keys;
mod params;
mod plan;
mod prepare;
mod run;

use std::fmt;
use std::sync::{Arc, Mutex};

pub use exec::GpuExecutable;

use self::context::{BufferPool, Ctx};
use self::kernels::Kernels;
use super::{Backend, Executable, Graph, NnError, RunLimits};

/// Gives the process a private `XDG_RUNTIME_DIR` (`<tmp>/refacen-runtime-<uid>`, mode 0700)
/// when it has none, as on servers and in CI. Mesa's Vulkan drivers probe window-system
/// support when an instance is created and otherwise print "error: XDG_RUNTIME_DIR is invalid
/// or not set in the environment", which reads like a refacen failure. Nothing is kept there.
///
/// # Safety
/// Sets an environment variable: call it before the process starts any other thread.
#[cfg(unix)]
pub unsafe fn provide_xdg_runtime_dir() {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    if std::env::var_os("XDG_RUNTIME_DIR").is_some() {
        return;
    }
    let Ok(uid) = std::fs::metadata("/proc/self").map(|m| m.uid()) else { return };
    let dir = std::env::temp_dir().join(format!("refacen-runtime-{uid}"));
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
    // Only a directory of ours that nobody else can enter (another user could have made it).
    let private = std::fs::symlink_metadata(&dir)
        .is_ok_and(|m| m.is_dir() && m.uid() == uid && m.permissions().mode() & 0o077 == 0);
    if private {
        // SAFETY: the caller guarantees no other thread exists yet.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
    }
}

/// How [`GpuBackend::new`] chooses and uses an adapter.
#[derive(Clone, Copy, Debug, Default)]
pub struct GpuOptions {
    /// Accept a software rasterizer (lavapipe, SwiftShader, WARP): slower than the CPU
    /// backend, but it runs the same kernels, which is what tests on GPU-less machines need.
    pub allow_software: bool,
    pub limits: RunLimits,
}

/// One adapter the instance reported, and why it was not used.
#[derive(Clone, Debug)]
pub struct RefusedAdapter {
    /// e.g. "llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan, Cpu)"
    pub adapter: String,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// No adapter qualifies; `found` lists every adapter seen and why each was refused.
    #[error("{}", no_adapter_message(.found))]
    NoAdapter { found: Vec<RefusedAdapter> },
    #[error("the GPU adapter {adapter} refused to create a device: {message}")]
    Device { adapter: String, message: String },
}

fn no_adapter_message(found: &[RefusedAdapter]) -> String {
    if found.is_empty() {
        return "no GPU adapter found: no Vulkan, Metal or DX12 driver reported one. On Linux, install \
                the GPU vendor's Vulkan driver, or Mesa's (`apt-get install mesa-vulkan-drivers \
                libvulkan1`, which includes the lavapipe software rasterizer), and check `vulkaninfo`"
            .into();
    }
    let list: Vec<String> = found.iter().map(|r| format!("{}: {}", r.adapter, r.reason)).collect();
    let software = found.iter().any(|r| r.reason.contains("allow_software"));
    format!(
        "no suitable GPU adapter; found {}{}",
        list.join("; "),
        if software {
            ". A software rasterizer runs the GPU kernels on the CPU, slower than the CPU backend; \
             to use it anyway pass --gpu-allow-software or set REFACEN_GPU_ALLOW_SOFTWARE=1 \
             (GpuOptions::allow_software in the library)"
        } else {
            ""
        }
    )
}

/// The wgpu backend. Cheap to share: prepared graphs keep the device alive.
pub struct GpuBackend {
    ctx: Arc<Ctx>,
    name: String,
    limits: RunLimits,
}

impl fmt::Debug for GpuBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GpuBackend").field("name", &self.name).finish()
    }
}

/// Adapter kinds in order of preference (a high-performance adapter first).
fn preference(device_type: wgpu::DeviceType) -> u8 {
    match device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

fn describe_adapter(info: &wgpu::AdapterInfo) -> String {
    format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type)
}

/// Why `adapter` cannot run the kernels, if it cannot.
fn refusal(adapter: &wgpu::Adapter, allow_software: bool) -> Option<String> {
    let info = adapter.get_info();
    let limits = adapter.limits();
    if info.device_type == wgpu::DeviceType::Cpu && !allow_software {
        return Some(
            "a software rasterizer (it emulates a GPU on the CPU), refused because allow_software is false"
                .into(),
        );
    }
    if !adapter.get_downlevel_capabilities().flags.contains(wgpu::DownlevelFlags::COMPUTE_SHADERS) {
        return Some("no compute shaders".into());
    }
    let needs = [
        ("storage buffers per shader stage", limits.max_storage_buffers_per_shader_stage, 7),
        ("invocations per workgroup", limits.max_compute_invocations_per_workgroup, 256),
        ("workgroup size x", limits.max_compute_workgroup_size_x, 256),
        ("workgroup storage bytes", limits.max_compute_workgroup_storage_size, 12 * 1024),
    ];
    for (what, has, need) in needs {
        if has < need {
            return Some(format!("{what}: {has}, the kernels need {need}"));
        }
    }
    None
}

impl GpuBackend {
    /// Chooses an adapter and creates a device on it.
    pub fn new(options: GpuOptions) -> Result<GpuBackend, GpuError> {
        let backends = wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12;
        let mut descriptor = wgpu::InstanceDescriptor::new_without_display_handle();
        descriptor.backends = backends;
        // No validation layers unless asked for (WGPU_VALIDATION=1 / WGPU_DEBUG=1).
        descriptor.flags = wgpu::InstanceFlags::empty().with_env();
        let instance = wgpu::Instance::new(descriptor);
        let adapters = pollster::block_on(instance.enumerate_adapters(backends));

        let mut refused = Vec::new();
        let mut best: Option<wgpu::Adapter> = None;
        for adapter in adapters {
            let info = adapter.get_info();
            match refusal(&adapter, options.allow_software) {
                Some(reason) => refused.push(RefusedAdapter { adapter: describe_adapter(&info), reason }),
                None => {
                    let better = best
                        .as_ref()
                        .is_none_or(|b| preference(info.device_type) < preference(b.get_info().device_type));
                    if better {
                        best = Some(adapter);
                    }
                }
            }
        }
        let Some(adapter) = best else { return Err(GpuError::NoAdapter { found: refused }) };
        let info = adapter.get_info();

        let offered = adapter.limits();
        let mut limits = wgpu::Limits::downlevel_defaults();
        // What the kernels and plans use, as much as the adapter offers.
        limits.max_storage_buffers_per_shader_stage = offered.max_storage_buffers_per_shader_stage.min(8);
        limits.max_bindings_per_bind_group = offered.max_bindings_per_bind_group.min(16);
        limits.max_storage_buffer_binding_size = offered.max_storage_buffer_binding_size;
        limits.max_buffer_size = offered.max_buffer_size;
        limits.max_compute_workgroup_storage_size = offered.max_compute_workgroup_storage_size;
        limits.max_compute_invocations_per_workgroup = offered.max_compute_invocations_per_workgroup;
        limits.max_compute_workgroup_size_x = offered.max_compute_workgroup_size_x;
        limits.max_compute_workgroup_size_y = offered.max_compute_workgroup_size_y;
        limits.max_compute_workgroup_size_z = offered.max_compute_workgroup_size_z;
        limits.max_compute_workgroups_per_dimension = offered.max_compute_workgroups_per_dimension;
        limits.min_storage_buffer_offset_alignment = offered.min_storage_buffer_offset_alignment;
        limits.min_uniform_buffer_offset_alignment = offered.min_uniform_buffer_offset_alignment;

        let timestamps = adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY);
        let features = if timestamps { wgpu::Features::TIMESTAMP_QUERY } else { wgpu::Features::empty() };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("refacen nn"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| GpuError::Device { adapter: describe_adapter(&info), message: e.to_string() })?;

        let uncaptured = Arc::new(Mutex::new(Vec::new()));
        let sink = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            sink.lock().expect("error list").push(e.to_string());
        }));
        let lost = uncaptured.clone();
        device.set_device_lost_callback(move |reason, message| {
            lost.lock().expect("error list").push(format!("GPU device lost ({reason:?}): {message}"));
        });

        let name = format!("gpu ({}, {:?})", info.name, info.backend);
        let binding_cap = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size) / 4 * 4;
        let ctx = Ctx {
            device,
            queue,
            info,
            limits,
            timestamps,
            kernels: Kernels::new(),
            // Idle buffers kept for later runs.
            pool: BufferPool::new(1 << 30),
            uncaptured,
            binding_cap,
        };
        Ok(GpuBackend { ctx: Arc::new(ctx), name, limits: options.limits })
    }

    /// One line for logs: the adapter, its driver and the limits that bound tensor sizes.
    pub fn describe(&self) -> String {
        let info = &self.ctx.info;
        let driver = [info.driver.as_str(), info.driver_info.as_str()]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        format!(
            "GPU backend: {} ({:?}, {:?}{}{}), largest tensor binding {} MiB{}",
            info.name,
            info.backend,
            info.device_type,
            if driver.is_empty() { "" } else { ", driver " },
            driver,
            self.ctx.max_binding() >> 20,
            if self.ctx.timestamps { ", GPU timestamps" } else { "" }
        )
    }

    /// Makes plans bind at most `bytes` (at least 4 KiB) of a buffer at once, as if the device's
    /// limit were that low, so that tests exercise the splitting of tensors larger than a
    /// binding with small tensors. Only before the first `prepare`.
    #[doc(hidden)]
    pub fn with_binding_cap(mut self, bytes: u64) -> Self {
        let ctx = Arc::get_mut(&mut self.ctx).expect("with_binding_cap before any prepare");
        ctx.binding_cap = ctx.binding_cap.min(bytes.max(4096) / 4 * 4);
        self
    }

    /// The adapter's type (e.g. to tell a software rasterizer from a GPU).
    pub fn device_type(&self) -> wgpu::DeviceType {
        self.ctx.info.device_type
    }

    /// Prepares `graph` and returns the concrete executable (for profiled runs).
    pub fn prepare_gpu(&self, graph: Arc<Graph>) -> Result<GpuExecutable, NnError> {
        GpuExecutable::new(self.ctx.clone(), graph, self.limits)
    }
}

impl Backend for GpuBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn prepare(&self, graph: Arc<Graph>) -> Result<Arc<dyn Executable>, NnError> {
        Ok(Arc::new(self.prepare_gpu(graph)?))
    }

    fn offloads(&self) -> bool {
        true
    }
}
