//! The WGSL kernels (`shaders/*.wgsl`, compiled into the binary) and a cache of their
//! compute pipelines, one per (entry point, pipeline-overridable constants).
//!
//! Every kernel binds, in group 0: binding 0 its parameters (a read-only storage buffer
//! holding one params struct of 4-byte fields) and then its storage buffers, bindings 1..=n
//! its n inputs (read-only) and binding n + 1 its output (read-write), all declared for both
//! languages in `params.rs`. Bind group and pipeline layouts are explicit, built from those
//! declarations (one per access pattern), so bindings an entry point leaves unused are
//! harmless.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::abi::{Access, StorageBuffer};
use super::context::scoped;
use super::params;
use crate::NnError;

/// A shader source file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shader {
    Conv,
    Gemm,
    Pool,
    Eltwise,
    Softmax,
    Layout,
    Gather,
    ConvTranspose,
}

/// The helpers every kernel file uses.
const PRELUDE: &str = include_str!("../../../../shaders/prelude.wgsl");
/// The tiling of the kernels that compute a matrix product (conv2d.wgsl and gemm.wgsl).
const TILED_PRODUCT: &str = include_str!("../../../../shaders/tiled_product.wgsl");

macro_rules! shader_file {
    ($file:literal) => {
        include_str!(concat!("../../../../shaders/", $file))
    };
}

impl Shader {
    #[cfg(test)]
    pub const ALL: [Shader; 8] = [
        Shader::Conv,
        Shader::Gemm,
        Shader::Pool,
        Shader::Eltwise,
        Shader::Softmax,
        Shader::Layout,
        Shader::Gather,
        Shader::ConvTranspose,
    ];

    /// The module's WGSL: what params.rs declares for it (shared dimensions, op codes, its
    /// params structs), the prelude, tiled_product.wgsl for the matrix-product kernels, then
    /// the file. Compiler messages count lines from the declarations' first.
    pub fn source(self) -> String {
        let mut wgsl = params::wgsl_declarations(self);
        wgsl.push_str(PRELUDE);
        if matches!(self, Shader::Conv | Shader::Gemm) {
            wgsl.push_str(TILED_PRODUCT);
        }
        wgsl.push_str(self.file_source());
        wgsl
    }

    /// The file's own WGSL.
    fn file_source(self) -> &'static str {
        match self {
            Shader::Conv => shader_file!("conv2d.wgsl"),
            Shader::Gemm => shader_file!("gemm.wgsl"),
            Shader::Pool => shader_file!("pool.wgsl"),
            Shader::Eltwise => shader_file!("eltwise.wgsl"),
            Shader::Softmax => shader_file!("softmax.wgsl"),
            Shader::Layout => shader_file!("layout.wgsl"),
            Shader::Gather => shader_file!("gather.wgsl"),
            Shader::ConvTranspose => shader_file!("conv_transpose.wgsl"),
        }
    }

    pub fn file(self) -> &'static str {
        match self {
            Shader::Conv => "conv2d.wgsl",
            Shader::Gemm => "gemm.wgsl",
            Shader::Pool => "pool.wgsl",
            Shader::Eltwise => "eltwise.wgsl",
            Shader::Softmax => "softmax.wgsl",
            Shader::Layout => "layout.wgsl",
            Shader::Gather => "gather.wgsl",
            Shader::ConvTranspose => "conv_transpose.wgsl",
        }
    }
}

/// One specialization of one entry point.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KernelKey {
    pub shader: Shader,
    pub entry: &'static str,
    /// Values of WGSL `override` constants (booleans as 0/1).
    pub constants: Vec<(&'static str, u32)>,
}

impl KernelKey {
    pub fn new(shader: Shader, entry: &'static str) -> Self {
        KernelKey { shader, entry, constants: Vec::new() }
    }

    pub fn with(mut self, name: &'static str, value: u32) -> Self {
        self.constants.push((name, value));
        self
    }

    pub fn flag(self, name: &'static str, value: bool) -> Self {
        self.with(name, value as u32)
    }
}

/// A compiled pipeline and the bind group layout its bind groups use.
pub struct Kernel {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

pub struct Kernels {
    modules: Mutex<HashMap<Shader, wgpu::ShaderModule>>,
    /// Per access pattern of the storage buffers (inputs, then output).
    layouts: Mutex<HashMap<Vec<Access>, (wgpu::BindGroupLayout, wgpu::PipelineLayout)>>,
    pipelines: Mutex<HashMap<KernelKey, Arc<Kernel>>>,
}

impl Kernels {
    pub fn new() -> Self {
        Kernels {
            modules: Mutex::new(HashMap::new()),
            layouts: Mutex::new(HashMap::new()),
            pipelines: Mutex::new(HashMap::new()),
        }
    }

    /// The pipeline for `key`, compiled on first use.
    pub fn get(&self, device: &wgpu::Device, key: &KernelKey) -> Result<Arc<Kernel>, NnError> {
        if let Some(k) = self.pipelines.lock().expect("kernel cache").get(key) {
            return Ok(k.clone());
        }
        let module = self.module(device, key.shader)?;
        let (layout, pipeline_layout) = self.layout(device, params::storage_buffers(key.shader, key.entry));
        let constants: Vec<(&str, f64)> = key.constants.iter().map(|&(n, v)| (n, v as f64)).collect();
        let label = format!("{}:{} {:?}", key.shader.file(), key.entry, key.constants);
        let pipeline = scoped(device, &format!("compiling kernel {label}"), || {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&label),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(key.entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &constants,
                    // Every kernel writes its workgroup memory before reading it.
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            })
        })?;
        let kernel = Arc::new(Kernel { pipeline, layout });
        self.pipelines.lock().expect("kernel cache").insert(key.clone(), kernel.clone());
        Ok(kernel)
    }

    fn module(&self, device: &wgpu::Device, shader: Shader) -> Result<wgpu::ShaderModule, NnError> {
        if let Some(m) = self.modules.lock().expect("module cache").get(&shader) {
            return Ok(m.clone());
        }
        // Buffer accesses stay bounds-checked. Two checks are dropped because they cost the
        // inner loops their unrolling and every index computation a branch: loop bounding
        // (every loop in shaders/ runs to a parameter or constant bound) and the guards
        // against integer division by zero (every divisor is a nonzero constant or a
        // dimension of a non-empty tensor: plans skip dispatches over empty tensors).
        let mut checks = wgpu::ShaderRuntimeChecks::checked();
        checks.force_loop_bounding = false;
        checks.int_div_checks = false;
        let module = scoped(device, &format!("compiling shaders/{}", shader.file()), || {
            // SAFETY: see above; the shaders are ours, compiled into the binary.
            unsafe {
                device.create_shader_module_trusted(
                    wgpu::ShaderModuleDescriptor {
                        label: Some(shader.file()),
                        source: wgpu::ShaderSource::Wgsl(shader.source().into()),
                    },
                    checks,
                )
            }
        })?;
        self.modules.lock().expect("module cache").insert(shader, module.clone());
        Ok(module)
    }

    fn layout(
        &self,
        device: &wgpu::Device,
        buffers: &[StorageBuffer],
    ) -> (wgpu::BindGroupLayout, wgpu::PipelineLayout) {
        let access: Vec<Access> = buffers.iter().map(|b| b.access).collect();
        let mut layouts = self.layouts.lock().expect("layout cache");
        layouts
            .entry(access)
            .or_insert_with_key(|access| {
                let entry = |binding: u32, read_only: bool| wgpu::BindGroupLayoutEntry {
                    binding,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Storage { read_only },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                };
                let mut entries = vec![entry(0, true)];
                entries.extend(buffers.iter().map(|b| entry(b.binding, b.access == Access::Read)));
                let label = format!("params, {access:?}");
                let bgl = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                    label: Some(&label),
                    entries: &entries,
                });
                let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                    label: Some(&label),
                    bind_group_layouts: &[Some(&bgl)],
                    immediate_size: 0,
                });
                (bgl, pl)
            })
            .clone()
    }
}
