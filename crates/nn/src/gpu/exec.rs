//! A prepared graph: weights on the device, and execution plans per set of input shapes.
//!
//! A [`Plan`] is everything a run of given input shapes needs, built once: input and
//! intermediate buffers (from the backend's pool; an intermediate's buffer is reused by a
//! later node as soon as its last reader has been recorded), one parameter buffer holding
//! every node's parameters, the bind groups, the dispatch list and a staging buffer for the
//! outputs. A run then only writes the inputs, records the dispatches into one compute pass,
//! copies the outputs to the staging buffer, submits once and maps the staging buffer.
//! Plans are cached per executable (most recently used first); an evicted plan returns its
//! buffers to the pool. `builder` builds plans (with `plan`, per op); `run` runs them.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use wgpu::util::DeviceExt;

use super::builder::NodeSteps;
use super::context::{Ctx, scoped};
use super::prepare::{self, Prepared};
use crate::NodeTiming;
use crate::ir::{Graph, Op};
use crate::{Deadline, Executable, NnError, RunLimits, Tensor};

/// Plans kept per executable: P-Net runs once per pyramid level, each level a shape.
const PLAN_CACHE: usize = 16;

/// Most bytes of buffers cached plans of one executable may hold.
const PLAN_CACHE_BYTES: u64 = 2 << 30;

pub struct GpuExecutable {
    pub(super) ctx: Arc<Ctx>,
    pub(super) graph: Arc<Graph>,
    pub(super) limits: RunLimits,
    /// Per value: the constant uploaded for nodes that read it from device memory.
    pub(super) constants: Vec<Option<wgpu::Buffer>>,
    /// Per node: weights and kernels packed at prepare time.
    pub(super) nodes: Vec<Prepared>,
    /// Per value: index of the last node reading it (graph outputs: never released).
    pub(super) last_use: Vec<usize>,
    pub(super) uses: Vec<usize>,
    /// Bound where a kernel's optional input is absent.
    pub(super) dummy: wgpu::Buffer,
    plans: Mutex<VecDeque<Plan>>,
}

/// One dispatch of a plan.
pub(super) struct Step {
    pub pipeline: wgpu::ComputePipeline,
    pub bind_group: wgpu::BindGroup,
    pub grid: [u32; 3],
}

pub(super) enum Output {
    Constant(Arc<Tensor>),
    Device { buffer: wgpu::Buffer, offset: u64, shape: Vec<usize> },
}

pub(super) struct Plan {
    pub ctx: Arc<Ctx>,
    pub key: Vec<Vec<usize>>,
    pub inputs: Vec<wgpu::Buffer>,
    pub intermediates: Vec<wgpu::Buffer>,
    pub steps: Vec<Step>,
    /// Per node: its steps, output shape and flops (for profiled runs).
    pub node_steps: Vec<NodeSteps>,
    pub outputs: Vec<Output>,
    pub staging: Option<wgpu::Buffer>,
    pub bytes: u64,
    pub _params: wgpu::Buffer,
}

impl Drop for Plan {
    fn drop(&mut self) {
        for buffer in self.inputs.drain(..).chain(self.intermediates.drain(..)) {
            self.ctx.pool.release(buffer);
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
                    nodes.push(prepare::prepare(&ctx, &graph, node).map_err(|e| match e {
                        NnError::InvalidArgument { .. } | NnError::Runtime { .. } => NnError::InvalidGraph {
                            node: Some(crate::NodeRef::of(node)),
                            fault: crate::GraphFault::Unpreparable { source: Box::new(e) },
                        },
                        other => other.at(node),
                    })?);
                }
                Ok::<_, NnError>((constants, nodes))
            })??;

        let last_use = graph.last_uses();
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
        NodeTiming::collect(self.graph.nodes.len(), |t| self.run_with(inputs, Some(t), Deadline::NONE))
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
            Some(e) => Err(NnError::runtime(crate::RuntimeFault::Gpu {
                during: "running the graph".into(),
                error: e,
            })),
            None => result,
        };
        // A plan whose run failed may hold a half-written state; only good plans are kept.
        if result.is_ok() {
            self.return_plan(plan);
        }
        result
    }
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
