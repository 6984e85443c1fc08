//! What every prepared graph of one [`super::GpuBackend`] shares: the device and queue, the
//! kernel cache, a pool of storage buffers reused across runs and graphs, and error capture.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::kernels::Kernels;
use crate::NnError;

pub struct Ctx {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    /// The limits the device was created with.
    pub limits: wgpu::Limits,
    /// Whether the device records timestamps (per-node GPU times in profiled runs).
    pub timestamps: bool,
    pub kernels: Kernels,
    pub pool: BufferPool,
    /// Errors no error scope caught (the default handler would panic).
    pub uncaptured: Arc<Mutex<Vec<String>>>,
    /// The largest range one binding may cover, in bytes: the device's limit, or less in
    /// tests of the splitting of larger tensors.
    pub binding_cap: u64,
}

impl Ctx {
    /// Alignment of each node's parameter block inside a plan's parameter buffer.
    pub fn param_align(&self) -> u64 {
        (self.limits.min_storage_buffer_offset_alignment as u64).max(16)
    }

    /// The largest buffer one binding may cover, in bytes.
    pub fn max_binding(&self) -> u64 {
        self.binding_cap
    }

    /// Workgroups per grid dimension; larger dispatches fold into a 2-D grid.
    pub fn max_groups(&self) -> u32 {
        self.limits.max_compute_workgroups_per_dimension
    }

    /// A 2-D grid of at least `workgroups` workgroups (kernels number them wid.x + wid.y ·
    /// nwg.x and skip the excess), or an error when even that exceeds the device.
    pub fn grid(&self, workgroups: u64) -> Result<[u32; 3], NnError> {
        let max = self.max_groups() as u64;
        if workgroups <= max {
            return Ok([workgroups as u32, 1, 1]);
        }
        let y = workgroups.div_ceil(max);
        if y > max {
            return Err(NnError::too_large(crate::Excess::GpuGrid { workgroups, max }));
        }
        Ok([max as u32, y as u32, 1])
    }

    /// Errors reported outside any error scope since the last call.
    pub fn take_uncaptured(&self) -> Option<String> {
        let mut errors = self.uncaptured.lock().expect("error list");
        if errors.is_empty() { None } else { Some(std::mem::take(&mut *errors).join("; ")) }
    }
}

/// Runs `f` inside validation and out-of-memory error scopes and turns a captured error
/// into `NnError::Runtime` (out of memory: `NnError::TooLarge`); `what` says what ran.
pub fn scoped<T>(device: &wgpu::Device, what: &str, f: impl FnOnce() -> T) -> Result<T, NnError> {
    let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let value = f();
    let invalid = pollster::block_on(validation.pop());
    let out_of_memory = pollster::block_on(oom.pop());
    if let Some(e) = out_of_memory {
        let excess = crate::Excess::GpuOutOfMemory { during: what.to_string(), error: e.to_string() };
        return Err(NnError::too_large(excess));
    }
    if let Some(e) = invalid {
        return Err(NnError::runtime(crate::RuntimeFault::Gpu {
            during: what.to_string(),
            error: e.to_string(),
        }));
    }
    Ok(value)
}

/// Storage buffers by size class, kept between runs so that a run allocates nothing once
/// its shapes have been seen. Classes are four per power of two (at most 19% slack).
pub struct BufferPool {
    free: Mutex<PoolState>,
    /// Most bytes kept idle; buffers released beyond it are destroyed.
    capacity: u64,
}

struct PoolState {
    buffers: HashMap<u64, Vec<wgpu::Buffer>>,
    bytes: u64,
}

/// Usage of every pooled buffer: kernels read and write it, inputs are written to it,
/// outputs copied from it.
pub const STORAGE_USAGE: wgpu::BufferUsages =
    wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_DST).union(wgpu::BufferUsages::COPY_SRC);

impl BufferPool {
    pub fn new(capacity: u64) -> Self {
        BufferPool { free: Mutex::new(PoolState { buffers: HashMap::new(), bytes: 0 }), capacity }
    }

    /// The size class holding `bytes`.
    pub fn class(bytes: u64) -> u64 {
        let bytes = bytes.max(256);
        let power = bytes.next_power_of_two();
        if power <= 1024 {
            return power;
        }
        let quarter = power / 8; // steps of a quarter of the previous power of two
        bytes.div_ceil(quarter) * quarter
    }

    /// A buffer of at least `bytes` bytes (contents undefined).
    pub fn acquire(&self, device: &wgpu::Device, bytes: u64) -> wgpu::Buffer {
        let class = Self::class(bytes);
        {
            let mut state = self.free.lock().expect("buffer pool");
            if let Some(buffer) = state.buffers.get_mut(&class).and_then(Vec::pop) {
                state.bytes -= class;
                return buffer;
            }
        }
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("refacen tensor"),
            size: class,
            usage: STORAGE_USAGE,
            mapped_at_creation: false,
        })
    }

    /// Returns a buffer from [`Self::acquire`] for reuse.
    pub fn release(&self, buffer: wgpu::Buffer) {
        let class = buffer.size();
        let mut state = self.free.lock().expect("buffer pool");
        if state.bytes + class > self.capacity {
            drop(state);
            buffer.destroy();
            return;
        }
        state.bytes += class;
        state.buffers.entry(class).or_default().push(buffer);
    }
}
