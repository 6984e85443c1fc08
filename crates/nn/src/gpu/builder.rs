//! Building a [`Plan`]: where each value lives (input buffers, intermediates from the pool,
//! reused as soon as a value is dead), each node's dispatches with their parameter blocks,
//! and at the end the bind groups, in one parameter buffer.

use std::ops::Range;
use std::sync::Arc;

use wgpu::util::DeviceExt;

use super::abi::KernelParams;
use super::context::Ctx;
use super::exec::{GpuExecutable, Output, Plan, Step};
use super::kernels::{Kernel, KernelKey};
use super::keys::{ShapeChoice, kernel_key};
use super::plan;
use crate::ir::{Node, ValueId};
use crate::{NnError, Tensor, element_count, shape};

/// Bytes bound for each dispatch's parameters: at least every kernel's params struct.
const PARAMS_BYTES: usize = 256;

/// Where a value lives during a run.
#[derive(Clone)]
pub(super) struct Loc {
    pub buffer: wgpu::Buffer,
    /// Index in the plan's intermediates, whose buffers are reused once dead.
    pub owned: Option<usize>,
    pub shape: Vec<usize>,
    /// The host copy of a constant (a graph output that is a constant is returned from it).
    pub constant: Option<Arc<Tensor>>,
}

impl Loc {
    pub fn elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// Bytes a binding of this value covers (bindings may not be empty).
    pub fn binding_bytes(&self) -> u64 {
        (self.elements() as u64 * 4).max(4)
    }

    /// A binding of the whole value.
    pub fn whole(&self) -> Bind<'_> {
        Bind { buffer: &self.buffer, offset: 0, size: self.binding_bytes() }
    }
}

/// A buffer range bound to a kernel.
#[derive(Clone, Copy)]
pub(super) struct Bind<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub offset: u64,
    pub size: u64,
}

impl<'a> Bind<'a> {
    pub fn buffer(buffer: &'a wgpu::Buffer) -> Self {
        Bind { buffer, offset: 0, size: buffer.size() }
    }
}

/// A dispatch waiting for the plan's parameter buffer.
struct Pending {
    kernel: Arc<Kernel>,
    params: Range<u64>,
    /// (binding, buffer, offset, bytes) of the inputs, then of the output.
    bindings: Vec<(u32, wgpu::Buffer, u64, u64)>,
    grid: [u32; 3],
}

/// Builds a plan node by node; `plan` adds each node's dispatches through it.
pub(super) struct Builder<'e> {
    pub exe: &'e GpuExecutable,
    pub ctx: &'e Ctx,
    params: Vec<u8>,
    pending: Vec<Pending>,
    intermediates: Vec<wgpu::Buffer>,
    /// Per intermediate: how many live values it holds.
    live: Vec<usize>,
    idle: Vec<usize>,
    locs: Vec<Option<Loc>>,
}

impl Builder<'_> {
    /// The location of input `i` of `node`.
    pub fn input(&self, node: &Node, i: usize) -> Result<&Loc, NnError> {
        self.value(node.required_input(i)?)
    }

    pub fn optional_input(&self, node: &Node, i: usize) -> Result<Option<&Loc>, NnError> {
        node.inputs.get(i).copied().flatten().map(|id| self.value(id)).transpose()
    }

    pub fn value(&self, id: ValueId) -> Result<&Loc, NnError> {
        self.locs[id]
            .as_ref()
            .ok_or_else(|| NnError::runtime(crate::RuntimeFault::ReadBeforeComputed { value: id }))
    }

    /// A fresh intermediate for a value of `shape`.
    pub fn output(&mut self, shape: Vec<usize>) -> Result<Loc, NnError> {
        let bytes = (shape.iter().product::<usize>() as u64 * 4).max(4);
        if bytes > self.ctx.limits.max_buffer_size {
            let what = format!("a tensor of shape {shape:?}");
            let limit = self.ctx.limits.max_buffer_size;
            return Err(NnError::too_large(crate::Excess::GpuBuffer { what, bytes, limit }));
        }
        // The smallest idle buffer that fits, unless it is more than twice the need.
        let fit = self
            .idle
            .iter()
            .enumerate()
            .filter(|&(_, &b)| self.intermediates[b].size() >= bytes)
            .min_by_key(|&(_, &b)| self.intermediates[b].size())
            .filter(|&(_, &b)| self.intermediates[b].size() <= 2 * bytes.max(1024))
            .map(|(i, _)| i);
        let index = match fit {
            Some(i) => self.idle.swap_remove(i),
            None => {
                self.intermediates.push(self.ctx.pool.acquire(&self.ctx.device, bytes));
                self.live.push(0);
                self.intermediates.len() - 1
            }
        };
        Ok(Loc { buffer: self.intermediates[index].clone(), owned: Some(index), shape, constant: None })
    }

    /// `input` under another shape, sharing its buffer.
    pub fn alias(&self, input: &Loc, shape: Vec<usize>) -> Loc {
        Loc { shape, constant: None, ..input.clone() }
    }

    /// Elements one binding of a split tensor may hold (room left for aligning its start).
    fn window_capacity(&self) -> usize {
        ((self.ctx.max_binding() - self.ctx.limits.min_storage_buffer_offset_alignment as u64) / 4) as usize
    }

    /// Splits `units` (images, planes, rows, values) into consecutive ranges such that
    /// `per_unit` elements of each split operand per unit fit one binding: one range when
    /// `total` elements (the largest operand) fit anyway, `None` when one unit does not.
    #[allow(clippy::single_range_in_vec_init)] // one range of units, not a list of them
    pub fn chunks(&self, units: usize, per_unit: usize, total: usize) -> Option<Vec<Range<usize>>> {
        if (total as u64).saturating_mul(4) <= self.ctx.max_binding() {
            return Some(vec![0..units]);
        }
        let step = self.window_capacity() / per_unit.max(1);
        (step > 0).then(|| (0..units).step_by(step).map(|s| s..(s + step).min(units)).collect())
    }

    /// A binding of elements [first, first + count) of `loc` (the whole value when it fits one
    /// binding) and the element index where the binding starts, which kernels subtract.
    pub fn window<'a>(&self, loc: &'a Loc, first: usize, count: usize) -> (Bind<'a>, u32) {
        if loc.binding_bytes() <= self.ctx.max_binding() {
            return (loc.whole(), 0);
        }
        let align = self.ctx.limits.min_storage_buffer_offset_alignment as u64;
        let start = first as u64 * 4 / align * align;
        let end = ((first + count) as u64 * 4).max(start + 4);
        (Bind { buffer: &loc.buffer, offset: start, size: end - start }, (start / 4) as u32)
    }

    /// The kernel node `index` dispatches (see [`kernel_key`]).
    pub fn kernel(&self, index: usize, node: &Node, choice: ShapeChoice) -> Result<KernelKey, NnError> {
        kernel_key(node, &self.exe.nodes[index], choice).ok_or_else(|| {
            NnError::runtime(crate::RuntimeFault::NoGpuKernel { choice: format!("{choice:?}") })
        })
    }

    /// Adds a dispatch of `key` over `grid` with `params`, reading `inputs`, writing `output`:
    /// bound in the order of `P::BUFFERS`, which says how many there are.
    pub fn dispatch<P: KernelParams>(
        &mut self,
        key: KernelKey,
        params: &P,
        inputs: &[Bind],
        output: Bind,
        grid: [u32; 3],
    ) -> Result<(), NnError> {
        const { assert!(size_of::<P>() <= PARAMS_BYTES) };
        let params_type = std::any::type_name::<P>();
        assert!(
            key.shader == P::SHADER && P::ENTRIES.contains(&key.entry),
            "{key:?} does not read {params_type}"
        );
        assert_eq!(
            inputs.len() + 1,
            P::BUFFERS.len(),
            "{key:?} binds {:?} after its {params_type}",
            P::BUFFERS.iter().map(|b| b.name).collect::<Vec<_>>()
        );
        for bind in inputs.iter().chain([&output]) {
            if bind.size > self.ctx.max_binding() {
                let what = format!("an operand of {} bytes", bind.size);
                let limit = Some(self.ctx.max_binding());
                return Err(NnError::too_large(crate::Excess::GpuBinding { what, limit }));
            }
        }
        let kernel = self.ctx.kernels.get(&self.ctx.device, &key)?;
        let align = self.ctx.param_align() as usize;
        let start = self.params.len().next_multiple_of(align);
        self.params.resize(start, 0);
        self.params.extend_from_slice(bytemuck::bytes_of(params));
        // Every block is bound as PARAMS_BYTES, whatever the struct's size.
        self.params.resize(start + PARAMS_BYTES, 0);
        let end = self.params.len() as u64;
        let bindings = (P::BUFFERS.iter().zip(inputs.iter().chain([&output])))
            .map(|(decl, b)| (decl.binding, b.buffer.clone(), b.offset, b.size))
            .collect();
        self.pending.push(Pending { kernel, params: start as u64..end, bindings, grid });
        Ok(())
    }

    /// A 2-D grid of `workgroups` workgroups.
    pub fn grid(&self, workgroups: u64) -> Result<[u32; 3], NnError> {
        self.ctx.grid(workgroups)
    }

    pub fn set(&mut self, id: ValueId, loc: Loc) {
        if let Some(i) = loc.owned {
            self.live[i] += 1;
        }
        if let Some(old) = self.locs[id].replace(loc) {
            self.release(&old);
        }
    }

    fn release(&mut self, loc: &Loc) {
        if let Some(i) = loc.owned {
            self.live[i] -= 1;
            if self.live[i] == 0 {
                self.idle.push(i);
            }
        }
    }

    pub fn drop_value(&mut self, id: ValueId) {
        if let Some(loc) = self.locs[id].take() {
            self.release(&loc);
        }
    }
}

/// Per node of a plan: its steps, output shape and flops (for profiled runs).
pub(super) type NodeSteps = (Range<usize>, Vec<usize>, u64);

impl<'e> Builder<'e> {
    /// A builder for `exe` with every constant of the graph in place.
    fn new(exe: &'e GpuExecutable) -> Self {
        let graph = &exe.graph;
        let mut locs = vec![None; graph.values.len()];
        for (id, value) in graph.values.iter().enumerate() {
            if let Some(tensor) = &value.constant {
                // Constants no kernel reads (conv weights, graph outputs) have no buffer.
                let buffer = exe.constants[id].as_ref().unwrap_or(&exe.dummy);
                locs[id] = Some(Loc {
                    buffer: buffer.clone(),
                    owned: None,
                    shape: tensor.shape().to_vec(),
                    constant: Some(tensor.clone()),
                });
            }
        }
        Builder {
            exe,
            ctx: &exe.ctx,
            params: Vec::new(),
            pending: Vec::new(),
            intermediates: Vec::new(),
            live: Vec::new(),
            idle: Vec::new(),
            locs,
        }
    }

    /// Buffers from the pool for graph inputs of shapes `key`.
    fn bind_inputs(&mut self, key: &[Vec<usize>]) -> Result<Vec<wgpu::Buffer>, NnError> {
        let graph = &self.exe.graph;
        let ctx = self.ctx;
        let mut inputs = Vec::with_capacity(key.len());
        for (input, shape) in graph.inputs.iter().zip(key) {
            let elements = self.check_size(shape, "input", graph.value_name(input.value))?;
            let bytes = (elements as u64 * 4).max(4);
            if bytes > ctx.limits.max_buffer_size {
                let what = format!("input `{}` of shape {shape:?}", graph.value_name(input.value));
                let limit = ctx.limits.max_buffer_size;
                return Err(NnError::too_large(crate::Excess::GpuBuffer { what, bytes, limit }));
            }
            let buffer = ctx.pool.acquire(&ctx.device, bytes);
            self.locs[input.value] =
                Some(Loc { buffer: buffer.clone(), owned: None, shape: shape.clone(), constant: None });
            inputs.push(buffer);
        }
        Ok(inputs)
    }

    fn check_size(&self, shape: &[usize], what: &str, name: &str) -> Result<usize, NnError> {
        let elements = element_count(shape)?;
        let limit = self.exe.limits.max_tensor_elements;
        if elements > limit || elements > u32::MAX as usize {
            return Err(NnError::TensorLimit {
                producer: format!("{what} `{name}`"),
                shape: shape.to_vec(),
                elements,
                limit: limit.min(u32::MAX as usize),
            });
        }
        Ok(elements)
    }

    /// Plans every node in order, releasing each value after its last reader.
    fn plan_nodes(&mut self) -> Result<Vec<NodeSteps>, NnError> {
        let exe = self.exe;
        let graph = &exe.graph;
        let mut node_steps = Vec::with_capacity(graph.nodes.len());
        for (index, node) in graph.nodes.iter().enumerate() {
            let first = self.pending.len();
            let (out_shape, flops) = self.plan_node(index, node).map_err(|e| e.at(node))?;
            node_steps.push((first..self.pending.len(), out_shape, flops));
            for &id in node.inputs.iter().flatten() {
                if exe.last_use[id] == index && graph.constant(id).is_none() {
                    self.drop_value(id);
                }
            }
            for &id in &node.outputs {
                if exe.uses[id] == 0 {
                    self.drop_value(id);
                }
            }
        }
        Ok(node_steps)
    }

    /// Plans one node; returns its output shape and flops.
    fn plan_node(&mut self, index: usize, node: &Node) -> Result<(Vec<usize>, u64), NnError> {
        let shapes: Vec<Option<Vec<usize>>> = node
            .inputs
            .iter()
            .map(|id| id.map(|id| self.value(id).map(|l| l.shape.clone())).transpose())
            .collect::<Result<_, _>>()?;
        let refs: Vec<Option<&[usize]>> = shapes.iter().map(|s| s.as_deref()).collect();
        let out_shape = shape::infer(&node.op, &refs)?.remove(0);
        let elements = element_count(&out_shape)?;
        let limit = self.exe.limits.max_tensor_elements;
        if elements > limit || elements > u32::MAX as usize {
            return Err(NnError::TensorLimit {
                producer: format!("{} node `{}`", node.op.onnx_name(), node.name),
                shape: out_shape,
                elements,
                limit: limit.min(u32::MAX as usize),
            });
        }
        let flops = crate::cost::node_flops(node, &refs);
        let loc = plan::plan(self, index, node, out_shape.clone())?;
        self.set(node.outputs[0], loc);
        Ok((out_shape, flops))
    }

    /// The graph outputs: constants from the host, the rest read back through one staging
    /// buffer of the returned size.
    fn outputs(&self) -> Result<(Vec<Output>, u64), NnError> {
        let graph = &self.exe.graph;
        let mut outputs = Vec::with_capacity(graph.outputs.len());
        let mut staging_bytes = 0u64;
        for &id in &graph.outputs {
            let loc = self.locs[id].as_ref().ok_or_else(|| {
                NnError::runtime(crate::RuntimeFault::NotComputed {
                    output: graph.value_name(id).to_string(),
                })
            })?;
            match &loc.constant {
                Some(t) => outputs.push(Output::Constant(t.clone())),
                None => {
                    let offset = staging_bytes;
                    staging_bytes = (offset + loc.elements() as u64 * 4).next_multiple_of(256);
                    outputs.push(Output::Device {
                        buffer: loc.buffer.clone(),
                        offset,
                        shape: loc.shape.clone(),
                    });
                }
            }
        }
        Ok((outputs, staging_bytes))
    }

    /// Uploads the parameter blocks and makes each pending dispatch a step with its bind group.
    fn steps(&mut self) -> (wgpu::Buffer, Vec<Step>) {
        let device = &self.ctx.device;
        let params = if self.params.is_empty() { vec![0u8; 16] } else { std::mem::take(&mut self.params) };
        let params = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("node parameters"),
            contents: &params,
            usage: wgpu::BufferUsages::STORAGE,
        });
        let mut steps = Vec::with_capacity(self.pending.len());
        for p in &self.pending {
            let mut entries = vec![buffer_entry(0, &params, p.params.start, p.params.end - p.params.start)];
            for (binding, buffer, offset, bytes) in &p.bindings {
                entries.push(buffer_entry(*binding, buffer, *offset, *bytes));
            }
            let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &p.kernel.layout,
                entries: &entries,
            });
            steps.push(Step { pipeline: p.kernel.pipeline.clone(), bind_group, grid: p.grid });
        }
        (params, steps)
    }
}

impl GpuExecutable {
    /// Builds the plan for inputs of shapes `key`.
    pub(super) fn build_plan(&self, key: Vec<Vec<usize>>) -> Result<Plan, NnError> {
        let mut b = Builder::new(self);
        let inputs = b.bind_inputs(&key)?;
        let node_steps = b.plan_nodes()?;
        let (outputs, staging_bytes) = b.outputs()?;
        let (params, steps) = b.steps();
        let staging = (staging_bytes > 0).then(|| {
            self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("outputs"),
                size: staging_bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        });
        let bytes = inputs.iter().chain(&b.intermediates).map(|b| b.size()).sum::<u64>() + staging_bytes;
        Ok(Plan {
            ctx: self.ctx.clone(),
            key,
            inputs,
            intermediates: std::mem::take(&mut b.intermediates),
            steps,
            node_steps,
            outputs,
            staging,
            bytes,
            _params: params,
        })
    }
}

/// A bind group entry of `size` bytes of `buffer` from `offset`.
fn buffer_entry(binding: u32, buffer: &wgpu::Buffer, offset: u64, size: u64) -> wgpu::BindGroupEntry<'_> {
    wgpu::BindGroupEntry {
        binding,
        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer,
            offset,
            size: wgpu::BufferSize::new(size),
        }),
    }
}
