//! A prepared graph: weights on the device, and execution plans per set of input shapes.
//!
//! A [`Plan`] is everything a run of given input shapes needs, built once: input and
//! intermediate buffers (from the backend's pool; an intermediate's buffer is reused by a
//! later node as soon as its last reader has been recorded), one parameter buffer holding
//! every node's parameters, the bind groups, the dispatch list and a staging buffer for the
//! outputs. A run then only writes the inputs, records the dispatches into one compute pass,
//! copies the outputs to the staging buffer, submits once and maps the staging buffer.
//! Plans are cached per executable (most recently used first); an evicted plan returns its
//! buffers to the pool.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use wgpu::util::DeviceExt;

use super::context::{Ctx, scoped};
use super::kernels::{Kernel, KernelKey};
use super::ops;
use crate::NodeTiming;
use crate::ir::{Graph, Node, Op, ValueId};
use crate::{Deadline, Executable, NnError, RunLimits, Tensor, element_count, shape};

/// Bytes bound for each dispatch's parameters: at least every shader's `Params` struct.
const PARAMS_BYTES: usize = 256;
/// Plans kept per executable: P-Net runs once per pyramid level, each level a shape.
const PLAN_CACHE: usize = 16;
/// Most work in one submission (flops), so that the deadline is checked between submissions.
const FLOPS_PER_SUBMISSION: u64 = 8_000_000_000;

/// Most bytes of buffers cached plans of one executable may hold.
const PLAN_CACHE_BYTES: u64 = 2 << 30;

pub struct GpuExecutable {
    pub(super) ctx: Arc<Ctx>,
    pub(super) graph: Arc<Graph>,
    limits: RunLimits,
    /// Per value: the constant uploaded for nodes that read it from device memory.
    pub(super) constants: Vec<Option<wgpu::Buffer>>,
    /// Per node: weights and kernels packed at prepare time.
    pub(super) nodes: Vec<ops::Prepared>,
    /// Per value: index of the last node reading it (graph outputs: never released).
    last_use: Vec<usize>,
    uses: Vec<usize>,
    /// Bound where a kernel's optional input is absent.
    pub(super) dummy: wgpu::Buffer,
    plans: Mutex<VecDeque<Plan>>,
}

/// Where a value lives during a run.
#[derive(Clone)]
pub(super) struct Loc {
    pub buffer: wgpu::Buffer,
    /// Index in the plan's intermediates, whose buffers are reused once dead.
    owned: Option<usize>,
    pub shape: Vec<usize>,
    /// The host copy of a constant (a graph output that is a constant is returned from it).
    constant: Option<Arc<Tensor>>,
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

struct Step {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    grid: [u32; 3],
}

enum Output {
    Constant(Arc<Tensor>),
    Device { buffer: wgpu::Buffer, offset: u64, shape: Vec<usize> },
}

pub(super) struct Plan {
    ctx: Arc<Ctx>,
    key: Vec<Vec<usize>>,
    inputs: Vec<wgpu::Buffer>,
    intermediates: Vec<wgpu::Buffer>,
    steps: Vec<Step>,
    /// Per node: its steps, output shape and flops (for profiled runs).
    node_steps: Vec<(Range<usize>, Vec<usize>, u64)>,
    outputs: Vec<Output>,
    staging: Option<wgpu::Buffer>,
    bytes: u64,
    _params: wgpu::Buffer,
}

impl Drop for Plan {
    fn drop(&mut self) {
        for buffer in self.inputs.drain(..).chain(self.intermediates.drain(..)) {
            self.ctx.pool.release(buffer);
        }
    }
}

/// A dispatch waiting for the plan's parameter buffer.
struct Pending {
    kernel: Arc<Kernel>,
    params: Range<u64>,
    /// (buffer, offset, bytes) of the inputs, then of the output.
    bindings: Vec<(wgpu::Buffer, u64, u64)>,
    grid: [u32; 3],
}

/// Builds a plan node by node; `ops` adds each node's dispatches through it.
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
        let id = node
            .inputs
            .get(i)
            .copied()
            .flatten()
            .ok_or_else(|| NnError::InvalidArgument(format!("missing input {i}")))?;
        self.value(id)
    }

    pub fn optional_input(&self, node: &Node, i: usize) -> Result<Option<&Loc>, NnError> {
        node.inputs.get(i).copied().flatten().map(|id| self.value(id)).transpose()
    }

    pub fn value(&self, id: ValueId) -> Result<&Loc, NnError> {
        self.locs[id]
            .as_ref()
            .ok_or_else(|| NnError::Runtime(format!("value #{id} is read before it is computed")))
    }

    /// A fresh intermediate for a value of `shape`.
    pub fn output(&mut self, shape: Vec<usize>) -> Result<Loc, NnError> {
        let bytes = (shape.iter().product::<usize>() as u64 * 4).max(4);
        if bytes > self.ctx.limits.max_buffer_size {
            return Err(NnError::TooLarge(format!(
                "a tensor of shape {shape:?} ({bytes} bytes) exceeds the largest buffer of the GPU ({} bytes)",
                self.ctx.limits.max_buffer_size
            )));
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

    /// Adds a dispatch of `key` over `grid` with `params`, reading `inputs`, writing `output`.
    pub fn dispatch(
        &mut self,
        key: KernelKey,
        params: &[u32],
        inputs: &[Bind],
        output: Bind,
        grid: [u32; 3],
    ) -> Result<(), NnError> {
        for bind in inputs.iter().chain([&output]) {
            if bind.size > self.ctx.max_binding() {
                return Err(NnError::TooLarge(format!(
                    "an operand of {} bytes exceeds the largest buffer binding of the GPU ({} bytes), and the \
                     GPU backend does not split this op",
                    bind.size,
                    self.ctx.max_binding()
                )));
            }
        }
        let kernel = self.ctx.kernels.get(&self.ctx.device, &key)?;
        debug_assert_eq!(kernel.inputs, inputs.len(), "{key:?}");
        let align = self.ctx.param_align() as usize;
        let start = self.params.len().next_multiple_of(align);
        self.params.resize(start, 0);
        self.params.extend(params.iter().flat_map(|p| p.to_le_bytes()));
        // Fields a kernel variant does not read may be omitted; the binding still covers the
        // whole Params struct of the shader (none exceeds 256 bytes).
        self.params.resize(self.params.len().max(start + PARAMS_BYTES), 0);
        let end = self.params.len() as u64;
        let bindings = inputs.iter().chain([&output]).map(|b| (b.buffer.clone(), b.offset, b.size)).collect();
        self.pending.push(Pending { kernel, params: start as u64..end, bindings, grid });
        Ok(())
    }

    /// A 2-D grid of `workgroups` workgroups.
    pub fn grid(&self, workgroups: u64) -> Result<[u32; 3], NnError> {
        self.ctx.grid(workgroups)
    }

    fn set(&mut self, id: ValueId, loc: Loc) {
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

    fn drop_value(&mut self, id: ValueId) {
        if let Some(loc) = self.locs[id].take() {
            self.release(&loc);
        }
    }
}

impl GpuExecutable {
    pub(super) fn new(ctx: Arc<Ctx>, graph: Arc<Graph>, limits: RunLimits) -> Result<Self, NnError> {
        let device = &ctx.device;
        let dummy = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("unused binding"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let (constants, nodes) =
            scoped(device, &format!("uploading the weights of `{}`", graph.name), || {
                let mut constants: Vec<Option<wgpu::Buffer>> = vec![None; graph.values.len()];
                let mut nodes = Vec::with_capacity(graph.nodes.len());
                for node in &graph.nodes {
                    for (position, id) in node.inputs.iter().enumerate() {
                        let Some(id) = *id else { continue };
                        let Some(tensor) = graph.constant(id) else { continue };
                        // Conv weights and biases are packed into the node's own buffers.
                        if matches!(node.op, Op::Conv(_)) && position > 0 || constants[id].is_some() {
                            continue;
                        }
                        constants[id] = Some(upload(device, &graph.values[id].name, tensor.data()));
                    }
                    nodes.push(ops::prepare(&ctx, &graph, node).map_err(|e| match e {
                        NnError::InvalidArgument(msg) | NnError::Runtime(msg) => NnError::InvalidGraph(
                            format!("{} node `{}`: {msg}", node.op.onnx_name(), node.name),
                        ),
                        other => other,
                    })?);
                }
                Ok::<_, NnError>((constants, nodes))
            })??;

        let mut last_use = vec![0; graph.values.len()];
        for (i, node) in graph.nodes.iter().enumerate() {
            for id in node.inputs.iter().flatten() {
                last_use[*id] = i;
            }
        }
        for &out in &graph.outputs {
            last_use[out] = usize::MAX;
        }
        let uses = graph.use_counts();
        Ok(GpuExecutable {
            ctx,
            graph,
            limits,
            constants,
            nodes,
            last_use,
            uses,
            dummy,
            plans: Mutex::new(VecDeque::new()),
        })
    }

    /// Builds the plan for inputs of shapes `key`.
    fn build_plan(&self, key: Vec<Vec<usize>>) -> Result<Plan, NnError> {
        let graph = &self.graph;
        let ctx = &*self.ctx;
        let mut b = Builder {
            exe: self,
            ctx,
            params: Vec::new(),
            pending: Vec::new(),
            intermediates: Vec::new(),
            live: Vec::new(),
            idle: Vec::new(),
            locs: vec![None; graph.values.len()],
        };
        for (id, value) in graph.values.iter().enumerate() {
            if let Some(tensor) = &value.constant {
                // Constants no kernel reads (conv weights, graph outputs) have no buffer.
                let buffer = self.constants[id].as_ref().unwrap_or(&self.dummy);
                b.locs[id] = Some(Loc {
                    buffer: buffer.clone(),
                    owned: None,
                    shape: tensor.shape().to_vec(),
                    constant: Some(tensor.clone()),
                });
            }
        }
        let mut inputs = Vec::with_capacity(key.len());
        for (input, shape) in graph.inputs.iter().zip(&key) {
            let elements = self.check_size(shape, "input", graph.value_name(input.value))?;
            let bytes = (elements as u64 * 4).max(4);
            if bytes > ctx.limits.max_buffer_size {
                return Err(NnError::TooLarge(format!(
                    "input `{}` of shape {shape:?} exceeds the largest buffer of the GPU ({} bytes)",
                    graph.value_name(input.value),
                    ctx.limits.max_buffer_size
                )));
            }
            let buffer = ctx.pool.acquire(&ctx.device, bytes);
            b.locs[input.value] =
                Some(Loc { buffer: buffer.clone(), owned: None, shape: shape.clone(), constant: None });
            inputs.push(buffer);
        }

        let mut node_ranges = Vec::with_capacity(graph.nodes.len());
        for (index, node) in graph.nodes.iter().enumerate() {
            let first = b.pending.len();
            let (out_shape, flops) = self.plan_node(&mut b, index, node).map_err(|e| match e {
                NnError::InvalidArgument(msg) | NnError::Runtime(msg) => {
                    NnError::Runtime(format!("{} node `{}`: {msg}", node.op.onnx_name(), node.name))
                }
                other => other,
            })?;
            node_ranges.push((first..b.pending.len(), out_shape, flops));
            for &id in node.inputs.iter().flatten() {
                if self.last_use[id] == index && graph.constant(id).is_none() {
                    b.drop_value(id);
                }
            }
            for &id in &node.outputs {
                if self.uses[id] == 0 {
                    b.drop_value(id);
                }
            }
        }

        // Outputs: constants from the host, the rest through one staging buffer.
        let mut outputs = Vec::with_capacity(graph.outputs.len());
        let mut staging_bytes = 0u64;
        for &id in &graph.outputs {
            let loc = b.locs[id].as_ref().ok_or_else(|| {
                NnError::Runtime(format!("output `{}` was not computed", graph.value_name(id)))
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

        let device = &ctx.device;
        let params = if b.params.is_empty() { vec![0u8; 16] } else { std::mem::take(&mut b.params) };
        let params = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("node parameters"),
            contents: &params,
            usage: wgpu::BufferUsages::STORAGE,
        });
        let mut steps = Vec::with_capacity(b.pending.len());
        for p in &b.pending {
            let mut entries = vec![wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &params,
                    offset: p.params.start,
                    size: wgpu::BufferSize::new(p.params.end - p.params.start),
                }),
            }];
            for (i, (buffer, offset, bytes)) in p.bindings.iter().enumerate() {
                entries.push(wgpu::BindGroupEntry {
                    binding: i as u32 + 1,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer,
                        offset: *offset,
                        size: wgpu::BufferSize::new(*bytes),
                    }),
                });
            }
            let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &p.kernel.layout,
                entries: &entries,
            });
            steps.push(Step { pipeline: p.kernel.pipeline.clone(), bind_group, grid: p.grid });
        }
        let staging = (staging_bytes > 0).then(|| {
            device.create_buffer(&wgpu::BufferDescriptor {
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
            node_steps: node_ranges,
            outputs,
            staging,
            bytes,
            _params: params,
        })
    }

    fn check_size(&self, shape: &[usize], what: &str, name: &str) -> Result<usize, NnError> {
        let elements = element_count(shape)?;
        if elements > self.limits.max_tensor_elements || elements > u32::MAX as usize {
            return Err(NnError::TooLarge(format!(
                "{what} `{name}` would create a tensor of shape {shape:?} ({elements} values; the limit is {})",
                self.limits.max_tensor_elements.min(u32::MAX as usize)
            )));
        }
        Ok(elements)
    }

    /// Plans one node; returns its output shape and flops.
    fn plan_node(&self, b: &mut Builder, index: usize, node: &Node) -> Result<(Vec<usize>, u64), NnError> {
        let shapes: Vec<Option<Vec<usize>>> = node
            .inputs
            .iter()
            .map(|id| id.map(|id| b.value(id).map(|l| l.shape.clone())).transpose())
            .collect::<Result<_, _>>()?;
        let refs: Vec<Option<&[usize]>> = shapes.iter().map(|s| s.as_deref()).collect();
        let out_shape = shape::infer(&node.op, &refs)?.remove(0);
        let elements = element_count(&out_shape)?;
        if elements > self.limits.max_tensor_elements || elements > u32::MAX as usize {
            return Err(NnError::TooLarge(format!(
                "{} node `{}` would create a tensor of shape {out_shape:?} ({elements} values; the limit is {})",
                node.op.onnx_name(),
                node.name,
                self.limits.max_tensor_elements.min(u32::MAX as usize)
            )));
        }
        let flops = crate::cost::node_flops(node, &refs);
        let loc = ops::plan(b, index, node, out_shape.clone())?;
        b.set(node.outputs[0], loc);
        Ok((out_shape, flops))
    }

    /// Takes the cached plan for `key`, or builds one.
    fn take_plan(&self, key: &[Vec<usize>]) -> Result<Plan, NnError> {
        let cached = {
            let mut plans = self.plans.lock().expect("plan cache");
            plans.iter().position(|p| p.key == key).and_then(|i| plans.remove(i))
        };
        match cached {
            Some(plan) => Ok(plan),
            None => scoped(&self.ctx.device, "building a GPU plan", || self.build_plan(key.to_vec()))?,
        }
    }

    fn return_plan(&self, plan: Plan) {
        let evicted: Vec<Plan> = {
            let mut plans = self.plans.lock().expect("plan cache");
            plans.push_front(plan);
            let mut evicted = Vec::new();
            while plans.len() > PLAN_CACHE
                || plans.len() > 1 && plans.iter().map(|p| p.bytes).sum::<u64>() > PLAN_CACHE_BYTES
            {
                evicted.extend(plans.pop_back());
            }
            evicted
        };
        drop(evicted);
    }

    /// Runs the graph and records each node's time (GPU timestamps when the device has them,
    /// otherwise one submission per node, timed on the host).
    pub fn run_profiled(&self, inputs: Vec<Tensor>) -> Result<(Vec<Tensor>, Vec<NodeTiming>), NnError> {
        let mut timings = Vec::with_capacity(self.graph.nodes.len());
        let outputs = self.run_with(inputs, Some(&mut timings), Deadline::NONE)?;
        Ok((outputs, timings))
    }

    fn run_with(
        &self,
        inputs: Vec<Tensor>,
        timings: Option<&mut Vec<NodeTiming>>,
        deadline: Deadline,
    ) -> Result<Vec<Tensor>, NnError> {
        self.graph.check_inputs(&inputs)?;
        let key: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape().to_vec()).collect();
        let plan = self.take_plan(&key)?;
        let result = scoped(&self.ctx.device, "running a graph on the GPU", || {
            self.execute(&plan, &inputs, timings, deadline)
        })
        .and_then(|r| r);
        let result = match self.ctx.take_uncaptured() {
            Some(e) => Err(NnError::Runtime(format!("GPU error: {e}"))),
            None => result,
        };
        // A plan whose run failed may hold a half-written state; only good plans are kept.
        if result.is_ok() {
            self.return_plan(plan);
        }
        result
    }

    fn execute(
        &self,
        plan: &Plan,
        inputs: &[Tensor],
        timings: Option<&mut Vec<NodeTiming>>,
        deadline: Deadline,
    ) -> Result<Vec<Tensor>, NnError> {
        let ctx = &*self.ctx;
        for (buffer, tensor) in plan.inputs.iter().zip(inputs) {
            if !tensor.is_empty() {
                ctx.queue.write_buffer(buffer, 0, bytemuck::cast_slice(tensor.data()));
            }
        }
        let mut encoder = ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        let mut timestamps = None;
        match timings {
            None => {
                // Submitted in bounded chunks, the deadline checked between them: a graph with
                // far more work than a call may take stops soon after its deadline (a single
                // dispatch cannot be interrupted). Ordinary graphs fit one chunk.
                let mut first = 0;
                let mut flops = 0;
                for (range, _, node_flops) in &plan.node_steps {
                    flops += node_flops;
                    if flops >= FLOPS_PER_SUBMISSION && range.end < plan.steps.len() {
                        {
                            let mut pass =
                                encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
                            for step in &plan.steps[first..range.end] {
                                record(&mut pass, step);
                            }
                        }
                        let next = ctx
                            .device
                            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
                        ctx.queue.submit([std::mem::replace(&mut encoder, next).finish()]);
                        wait(ctx)?;
                        deadline.check()?;
                        (first, flops) = (range.end, 0);
                    }
                }
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
                for step in &plan.steps[first..] {
                    record(&mut pass, step);
                }
            }
            Some(timings) if ctx.timestamps => {
                let count = plan.node_steps.len().max(1) as u32 * 2;
                let queries = ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("node times"),
                    ty: wgpu::QueryType::Timestamp,
                    count,
                });
                for (i, (range, _, _)) in plan.node_steps.iter().enumerate() {
                    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: None,
                        timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                            query_set: &queries,
                            beginning_of_pass_write_index: Some(2 * i as u32),
                            end_of_pass_write_index: Some(2 * i as u32 + 1),
                        }),
                    });
                    for step in &plan.steps[range.clone()] {
                        record(&mut pass, step);
                    }
                }
                let resolved = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("node times"),
                    size: count as u64 * 8,
                    usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                });
                let readback = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("node times"),
                    size: count as u64 * 8,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                if !plan.node_steps.is_empty() {
                    encoder.resolve_query_set(&queries, 0..count, &resolved, 0);
                    encoder.copy_buffer_to_buffer(&resolved, 0, &readback, 0, count as u64 * 8);
                }
                timestamps = Some((readback, timings));
            }
            Some(timings) => {
                // One submission per node, timed on the host.
                for (i, (range, shape, flops)) in plan.node_steps.iter().enumerate() {
                    let started = std::time::Instant::now();
                    let mut node_encoder =
                        ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
                    {
                        let mut pass =
                            node_encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
                        for step in &plan.steps[range.clone()] {
                            record(&mut pass, step);
                        }
                    }
                    ctx.queue.submit([node_encoder.finish()]);
                    wait(ctx)?;
                    let node = &self.graph.nodes[i];
                    timings.push(NodeTiming {
                        node: node.name.clone(),
                        op: node.op.onnx_name(),
                        output_shape: shape.clone(),
                        elapsed: started.elapsed(),
                        flops: *flops,
                    });
                }
            }
        }
        if let Some(staging) = &plan.staging {
            for output in &plan.outputs {
                if let Output::Device { buffer, offset, shape } = output {
                    let bytes = shape.iter().product::<usize>() as u64 * 4;
                    if bytes > 0 {
                        encoder.copy_buffer_to_buffer(buffer, 0, staging, *offset, bytes);
                    }
                }
            }
        }
        ctx.queue.submit([encoder.finish()]);

        let mut results = Vec::with_capacity(plan.outputs.len());
        let mapped = match &plan.staging {
            Some(staging) => Some(map_read(ctx, staging)?),
            None => {
                wait(ctx)?;
                None
            }
        };
        for output in &plan.outputs {
            results.push(match output {
                Output::Constant(t) => t.as_ref().clone(),
                Output::Device { offset, shape, .. } => {
                    let n: usize = shape.iter().product();
                    if n == 0 {
                        results.push(Tensor::new(shape.clone(), Vec::new())?);
                        continue;
                    }
                    let bytes = mapped.as_deref().expect("staging buffer mapped");
                    let data: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes[*offset as usize..][..n * 4]);
                    Tensor::new(shape.clone(), data)?
                }
            });
        }
        if let Some((readback, timings)) = timestamps {
            let raw: Vec<u64> = bytemuck::pod_collect_to_vec(&map_read(ctx, &readback)?);
            let period = ctx.queue.get_timestamp_period() as f64;
            for (i, (_, shape, flops)) in plan.node_steps.iter().enumerate() {
                let ticks = raw[2 * i + 1].saturating_sub(raw[2 * i]);
                let node = &self.graph.nodes[i];
                timings.push(NodeTiming {
                    node: node.name.clone(),
                    op: node.op.onnx_name(),
                    output_shape: shape.clone(),
                    elapsed: std::time::Duration::from_nanos((ticks as f64 * period) as u64),
                    flops: *flops,
                });
            }
        }
        Ok(results)
    }
}

fn record(pass: &mut wgpu::ComputePass<'_>, step: &Step) {
    pass.set_pipeline(&step.pipeline);
    pass.set_bind_group(0, &step.bind_group, &[]);
    pass.dispatch_workgroups(step.grid[0], step.grid[1], step.grid[2]);
}

/// Waits for all submitted work.
fn wait(ctx: &Ctx) -> Result<(), NnError> {
    ctx.device
        .poll(wgpu::PollType::wait_indefinitely())
        .map(|_| ())
        .map_err(|e| NnError::Runtime(format!("waiting for the GPU: {e}")))
}

/// Maps `buffer` (after the submitted work), copies its bytes out and unmaps it.
fn map_read(ctx: &Ctx, buffer: &wgpu::Buffer) -> Result<Vec<u8>, NnError> {
    let (tx, rx) = std::sync::mpsc::channel();
    buffer.map_async(wgpu::MapMode::Read, .., move |r| {
        let _ = tx.send(r);
    });
    wait(ctx)?;
    rx.recv()
        .map_err(|_| NnError::Runtime("the GPU never finished mapping the outputs".into()))?
        .map_err(|e| NnError::Runtime(format!("reading the outputs back from the GPU: {e}")))?;
    let bytes = buffer
        .get_mapped_range(..)
        .map_err(|e| NnError::Runtime(format!("reading the outputs back from the GPU: {e}")))?
        .to_vec();
    buffer.unmap();
    Ok(bytes)
}

/// A read-only storage buffer holding `data` (at least 4 bytes).
pub(super) fn upload(device: &wgpu::Device, label: &str, data: &[f32]) -> wgpu::Buffer {
    let bytes: &[u8] = if data.is_empty() { &[0; 4] } else { bytemuck::cast_slice(data) };
    device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some(label),
        contents: bytes,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
    })
}

impl Executable for GpuExecutable {
    fn run_until(&self, inputs: Vec<Tensor>, deadline: Deadline) -> Result<Vec<Tensor>, NnError> {
        self.run_with(inputs, None, deadline)
    }
}
