//! The CPU backend, multithreaded with rayon. Convolutions run on two AVX-512 microkernels
//! (`kernel`, vectors over output columns; `channel_kernel`, vectors over output channels),
//! their weights packed on first use per prepared graph, 3x3 stride-1 ones with many
//! channels by Winograd's F(2x2, 3x3) or F(4x4, 3x3) on the first (`winograd`). A residual
//! `Add` (and the activation after it) is fused into the conv that feeds it
//! ([`crate::fuse_residual_adds`]), which then writes over the residual's values. A Gemm with
//! constant weights runs as a 1x1 conv (`matmul::ConstantB`); other MatMul/Gemm, and
//! convolutions on CPUs without AVX-512, on the `gemm` crate.

// The AVX-512 microkernels and what feeds them; other CPUs run convolutions on `gemm`.
#[cfg(target_arch = "x86_64")]
mod channel_kernel;
mod conv;
#[cfg(target_arch = "x86_64")]
mod conv_batched;
#[cfg(target_arch = "x86_64")]
mod conv_channels;
#[cfg(target_arch = "x86_64")]
mod conv_flat;
mod indexing;
#[cfg(target_arch = "x86_64")]
mod kernel;
mod matmul;
mod ops;
#[cfg(target_arch = "x86_64")]
mod pool_lanes;
mod resample;
mod solo;
#[cfg(target_arch = "x86_64")]
mod trim;
#[cfg(target_arch = "x86_64")]
mod winograd;

use std::sync::Arc;

use super::ir::{self, Graph, Node, Op, PadMode, ValueId};
use super::{
    ArgumentFault, Backend, Deadline, Executable, GraphFault, NnError, NodeTiming, RunLimits, RuntimeFault,
    Tensor, element_count, shape,
};
use crate::spare::Spare;

#[derive(Debug, Default)]
pub struct CpuBackend {
    limits: RunLimits,
}

impl CpuBackend {
    pub fn new(limits: RunLimits) -> Self {
        CpuBackend { limits }
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> &str {
        "cpu"
    }

    fn prepare(&self, graph: Arc<Graph>) -> Result<Arc<dyn Executable>, NnError> {
        Ok(Arc::new(CpuExecutable::new(graph, self.limits)?))
    }
}

/// A pointer shared by parallel workers that write disjoint parts of one buffer.
#[derive(Clone, Copy)]
struct SyncPtr(*mut f32);
// SAFETY: only used where every worker writes a region no other worker touches.
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}
impl SyncPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Runs `run` on items 0..count in parallel (inline when there is one), skipping the items
/// not yet started once `deadline` has passed: the caller checks the deadline afterwards and
/// discards the incomplete output.
fn for_each_item(count: usize, deadline: &Deadline, run: impl Fn(usize) + Sync + Send) {
    let run = |item: usize| {
        if !deadline.expired() {
            run(item)
        }
    };
    if count == 1 {
        run(0);
    } else if !solo::share(count, &run) {
        use rayon::prelude::*;
        (0..count).into_par_iter().for_each(run);
    }
}

/// `run(i, chunk)` on the chunks of `len` values of `data` (the last one shorter where `len`
/// does not divide it), `per_item` chunks to an item of [`for_each_item`]: in parallel as the
/// conv kernels' items are, so that a run alone waits for them without sleeping
/// ([`solo::share`]).
fn for_each_chunk(
    data: &mut [f32],
    len: usize,
    per_item: usize,
    run: impl Fn(usize, &mut [f32]) + Sync + Send,
) {
    let (len, per_item, total) = (len.max(1), per_item.max(1), data.len());
    let chunks = total.div_ceil(len);
    let base = SyncPtr(data.as_mut_ptr());
    for_each_item(chunks.div_ceil(per_item), &Deadline::NONE, |item| {
        for c in item * per_item..((item + 1) * per_item).min(chunks) {
            let start = c * len;
            // SAFETY: the chunks are disjoint ranges of `data`, each taken by one item, and
            // `data` outlives the loop.
            let chunk =
                unsafe { std::slice::from_raw_parts_mut(base.get().add(start), len.min(total - start)) };
            run(c, chunk);
        }
    });
}

pub struct CpuExecutable {
    graph: Arc<Graph>,
    limits: RunLimits,
    /// Per node: the bias of a Conv (zeros when the model has none), packed once.
    conv_bias: Vec<Option<Vec<f32>>>,
    /// Per node: a Conv's weights packed for the microkernel, where the CPU runs it.
    conv_weights: Vec<Option<conv::PackedConv>>,
    /// Per node: a Gemm with a constant B, run on the conv kernels where it fits.
    gemm_constants: Vec<Option<matmul::ConstantB>>,
    /// Per value: index of the last node reading it (graph outputs: never freed).
    last_use: Vec<usize>,
}

/// A value during a run: a borrowed constant or an owned intermediate.
enum Slot<'a> {
    Empty,
    Const(&'a Tensor),
    Owned(Tensor),
}

impl CpuExecutable {
    pub fn new(graph: Arc<Graph>, limits: RunLimits) -> Result<Self, NnError> {
        let graph = Arc::new(crate::fuse_residual_adds(graph.as_ref().clone()));
        let mut conv_bias = Vec::with_capacity(graph.nodes.len());
        let mut conv_weights = Vec::with_capacity(graph.nodes.len());
        for node in &graph.nodes {
            conv_weights.push(match &node.op {
                Op::Conv(conv) if conv::microkernels_available() => {
                    node.inputs[1].and_then(|id| graph.constant(id)).and_then(|w| {
                        let s = w.shape();
                        let groups = conv.group.max(1);
                        (s.len() == 4 && s[0] % groups == 0 && !conv::is_depthwise(s[1], s[0] / groups))
                            .then(conv::PackedConv::default)
                    })
                }
                _ => None,
            });
            conv_bias.push(match &node.op {
                Op::Conv(_) => {
                    let w = node.inputs[1].and_then(|id| graph.constant(id)).ok_or_else(|| {
                        NnError::invalid_graph(GraphFault::NotConstant { what: "weights tensor" }).at(node)
                    })?;
                    let channels = w.shape()[0];
                    Some(match node.inputs.get(2).copied().flatten() {
                        Some(b) => {
                            let b = graph.constant(b).ok_or_else(|| {
                                NnError::invalid_graph(GraphFault::NotConstant { what: "bias" }).at(node)
                            })?;
                            if b.len() != channels {
                                let fault = GraphFault::PerChannel { what: "biases", got: b.len(), channels };
                                return Err(NnError::invalid_graph(fault).at(node));
                            }
                            b.data().to_vec()
                        }
                        None => vec![0.0; channels],
                    })
                }
                _ => None,
            });
        }
        let gemm_constants = graph
            .nodes
            .iter()
            .map(|node| match &node.op {
                Op::Gemm(g) => {
                    let b = graph.constant(node.inputs.get(1).copied().flatten()?)?;
                    let c = match node.inputs.get(2).copied().flatten() {
                        Some(id) => Some(graph.constant(id)?.as_ref()),
                        None => None,
                    };
                    matmul::ConstantB::new(g, b, c)
                }
                _ => None,
            })
            .collect();
        let last_use = graph.last_uses();
        Ok(CpuExecutable { graph, limits, conv_bias, conv_weights, gemm_constants, last_use })
    }
}

impl Executable for CpuExecutable {
    fn run_until(&self, inputs: Vec<Tensor>, deadline: Deadline) -> Result<Vec<Tensor>, NnError> {
        self.run_timed(inputs, None, deadline)
    }
}

impl CpuExecutable {
    /// Runs the graph and records how long each node took (for benchmarks).
    pub fn run_profiled(&self, inputs: Vec<Tensor>) -> Result<(Vec<Tensor>, Vec<NodeTiming>), NnError> {
        NodeTiming::collect(self.graph.nodes.len(), |t| self.run_timed(inputs, Some(t), Deadline::NONE))
    }

    /// Runs the graph ([`solo`] says on which thread), with the spare buffers this thread's
    /// last run left.
    fn run_timed(
        &self,
        inputs: Vec<Tensor>,
        timings: Option<&mut Vec<NodeTiming>>,
        deadline: Deadline,
    ) -> Result<Vec<Tensor>, NnError> {
        let mut spare = Spare::take_kept();
        let outputs = solo::RUNS.run(|| self.run_nodes(inputs, timings, &mut spare, deadline));
        spare.keep_for_next_run();
        outputs
    }

    fn run_nodes(
        &self,
        inputs: Vec<Tensor>,
        mut timings: Option<&mut Vec<NodeTiming>>,
        spare: &mut Spare,
        deadline: Deadline,
    ) -> Result<Vec<Tensor>, NnError> {
        self.graph.check_inputs(&inputs)?;
        let graph = &self.graph;
        let mut slots: Vec<Slot> =
            graph.values.iter().map(|v| v.constant.as_deref().map_or(Slot::Empty, Slot::Const)).collect();
        for (input, tensor) in graph.inputs.iter().zip(inputs) {
            slots[input.value] = Slot::Owned(tensor);
        }
        for (index, node) in graph.nodes.iter().enumerate() {
            deadline.check()?;
            let started = std::time::Instant::now();
            let flops = timings.as_ref().map_or(0, |_| node_flops(node, &slots));
            let output = self.run_node(index, &mut slots, spare, &deadline).map_err(|e| e.at(node))?;
            if let Some(timings) = timings.as_deref_mut() {
                timings.push(NodeTiming {
                    node: node.name.clone(),
                    op: node.op.onnx_name(),
                    output_shape: output.shape().to_vec(),
                    elapsed: started.elapsed(),
                    flops,
                });
            }
            slots[node.outputs[0]] = Slot::Owned(output);
            for id in node.inputs.iter().flatten() {
                if self.last_use[*id] == index
                    && let Slot::Owned(t) = std::mem::replace(&mut slots[*id], Slot::Empty)
                {
                    spare.give(t);
                }
            }
        }
        graph
            .outputs
            .iter()
            .map(|&id| match std::mem::replace(&mut slots[id], Slot::Empty) {
                Slot::Owned(t) => Ok(t),
                Slot::Const(t) => Ok(t.clone()),
                Slot::Empty => Err(NnError::runtime(RuntimeFault::NotComputed {
                    output: graph.value_name(id).to_string(),
                })),
            })
            .collect()
    }
}

impl CpuExecutable {
    /// The shape of `node`'s output for the inputs in `slots`, refused over the run's limit.
    fn output_shape(&self, node: &Node, slots: &[Slot]) -> Result<Vec<usize>, NnError> {
        let shapes: Vec<Option<&[usize]>> = node
            .inputs
            .iter()
            .map(|id| id.map(|id| value(slots, id).map(|t| t.shape())).transpose())
            .collect::<Result<_, _>>()?;
        let out_shape = shape::infer(&node.op, &shapes)?.remove(0);
        let elements = element_count(&out_shape)?;
        if elements > self.limits.max_tensor_elements {
            return Err(NnError::TensorLimit {
                producer: format!("{} node `{}`", node.op.onnx_name(), node.name),
                shape: out_shape,
                elements,
                limit: self.limits.max_tensor_elements,
            });
        }
        Ok(out_shape)
    }

    /// Conv node `index`, with the weights and bias packed at prepare; a padded copy of its
    /// input, if it needs one, in one of the `spare` buffers. A conv with a residual writes
    /// over the residual's values where nothing reads them later, over a copy otherwise.
    fn conv_node(
        &self,
        index: usize,
        conv: &ir::Conv,
        slots: &mut [Slot],
        out_shape: Vec<usize>,
        spare: &mut Spare,
        deadline: &Deadline,
    ) -> Result<Tensor, NnError> {
        let node = &self.graph.nodes[index];
        let geometry = {
            let (x, w) = (input_of(node, slots, 0)?, input_of(node, slots, 1)?);
            shape::conv_geometry(conv, x.shape(), w.shape())?
        };
        let g = &geometry;
        let conv_shape = [g.batch, g.out_channels, g.out_hw[0], g.out_hw[1]];
        let mut out = if !conv.residual {
            spare.output(out_shape)?
        } else if input_of(node, slots, 3)?.shape() != conv_shape {
            return self.conv_broadcast_residual(index, conv, slots, g, spare, deadline);
        } else if let Some(residual) = self.take_for_output(index, node, 3, &out_shape, slots) {
            residual
        } else {
            let mut out = spare.output(out_shape)?;
            out.data_mut().copy_from_slice(input_of(node, slots, 3)?.data());
            out
        };
        let (x, w) = (input_of(node, slots, 0)?, input_of(node, slots, 1)?);
        let bias = self.conv_bias[index].as_deref().expect("packed at prepare");
        let packed = self.conv_weights[index].as_ref();
        conv::conv2d(x.data(), w.data(), packed, bias, conv, g, out.data_mut(), spare, deadline)?;
        deadline.check()?;
        Ok(out)
    }

    /// A conv whose residual has another shape, which broadcasts to the output (over channels
    /// it lacks, or to a wider batch): the conv alone, then the Add and the activation as the
    /// unfused nodes ran them.
    fn conv_broadcast_residual(
        &self,
        index: usize,
        conv: &ir::Conv,
        slots: &[Slot],
        g: &shape::ConvGeometry,
        spare: &mut Spare,
        deadline: &Deadline,
    ) -> Result<Tensor, NnError> {
        let node = &self.graph.nodes[index];
        let (x, w, residual) =
            (input_of(node, slots, 0)?, input_of(node, slots, 1)?, input_of(node, slots, 3)?);
        let plain = ir::Conv { activation: ir::Activation::None, residual: false, ..conv.clone() };
        let bias = self.conv_bias[index].as_deref().expect("packed at prepare");
        let packed = self.conv_weights[index].as_ref();
        let mut y = spare.output(vec![g.batch, g.out_channels, g.out_hw[0], g.out_hw[1]])?;
        conv::conv2d(x.data(), w.data(), packed, bias, &plain, g, y.data_mut(), spare, deadline)?;
        deadline.check()?;
        let mut sum = ops::binary(ir::Binary::Add, residual, &y)?;
        spare.give(y);
        conv::activate_planes(&mut sum, &conv.activation);
        Ok(sum)
    }

    fn run_node(
        &self,
        index: usize,
        slots: &mut [Slot],
        spare: &mut Spare,
        deadline: &Deadline,
    ) -> Result<Tensor, NnError> {
        let node = &self.graph.nodes[index];
        let out_shape = self.output_shape(node, slots)?;
        Ok(match &node.op {
            // Conv, pooling, Transpose, Concat and constant Pad write every output value: a
            // spare buffer's stale values do.
            Op::Conv(conv) => self.conv_node(index, conv, slots, out_shape, spare, deadline)?,
            Op::Gemm(_)
                if let Some(constant) = &self.gemm_constants[index]
                    && input_of(node, slots, 0).is_ok_and(|a| constant.suits(a)) =>
            {
                let out = spare.output(out_shape)?;
                constant.run(input_of(node, slots, 0)?, out, spare, deadline)?
            }
            Op::Gemm(g) => {
                let c = node.inputs.get(2).copied().flatten().map(|id| value(slots, id)).transpose()?;
                matmul::gemm_op(
                    g,
                    input_of(node, slots, 0)?,
                    input_of(node, slots, 1)?,
                    c,
                    &out_shape,
                    deadline,
                )?
            }
            Op::MatMul => matmul::matmul(input_of(node, slots, 0)?, input_of(node, slots, 1)?, deadline)?,
            Op::Pool(pool) => {
                ops::pool2d(pool, input_of(node, slots, 0)?, spare.output(out_shape)?, deadline)?
            }
            Op::GlobalPool(kind) => ops::global_pool(*kind, input_of(node, slots, 0)?)?,
            Op::Unary(op) => {
                let mut x = self.take_or_clone(index, node.inputs[0], slots)?;
                ops::unary_in_place(*op, &mut x);
                x
            }
            Op::PRelu => match self.take_for_output(index, node, 0, &out_shape, slots) {
                Some(mut x) => {
                    ops::prelu_in_place(&mut x, input_of(node, slots, 1)?);
                    x
                }
                None => ops::prelu(input_of(node, slots, 0)?, input_of(node, slots, 1)?)?,
            },
            Op::Binary(op) => {
                let taken = self
                    .take_for_output(index, node, 0, &out_shape, slots)
                    .map(|t| (t, 1))
                    .or_else(|| self.take_for_output(index, node, 1, &out_shape, slots).map(|t| (t, 0)));
                match taken {
                    Some((mut out, other)) => {
                        ops::binary_in_place(*op, &mut out, input_of(node, slots, other)?, other == 1);
                        out
                    }
                    None => ops::binary(*op, input_of(node, slots, 0)?, input_of(node, slots, 1)?)?,
                }
            }
            Op::BatchNorm { epsilon } => ops::batch_norm(
                input_of(node, slots, 0)?,
                [
                    input_of(node, slots, 1)?,
                    input_of(node, slots, 2)?,
                    input_of(node, slots, 3)?,
                    input_of(node, slots, 4)?,
                ],
                *epsilon,
            )?,
            Op::Softmax { axis, coerce_2d } => {
                let mut x = self.take_or_clone(index, node.inputs[0], slots)?;
                ops::softmax_in_place(&mut x, *axis, *coerce_2d)?;
                x
            }
            Op::Flatten { .. } | Op::Reshape { .. } | Op::Squeeze { .. } | Op::Unsqueeze { .. } => {
                self.take_or_clone(index, node.inputs[0], slots)?.reshaped(out_shape)?
            }
            Op::Transpose { perm } => {
                let x = input_of(node, slots, 0)?;
                ops::transpose(x, &shape::transpose_perm(perm, x.rank())?, spare.output(out_shape)?)?
            }
            Op::Concat { axis } => {
                let tensors: Vec<&Tensor> =
                    node.inputs.iter().flatten().map(|&id| value(slots, id)).collect::<Result<_, _>>()?;
                let axis = shape::normalize_axis(*axis, tensors[0].rank(), 0)?;
                ops::concat(&tensors, axis, spare.output(out_shape)?)
            }
            Op::Pad { pads, value: fill, mode: PadMode::Constant, axes: None } => {
                ops::pad(input_of(node, slots, 0)?, pads, *fill, spare.output(out_shape)?)?
            }
            Op::Pad { pads, value: fill, mode, axes } => {
                let x = input_of(node, slots, 0)?;
                let pads = shape::full_pads(pads, axes.as_deref(), x.rank())?;
                indexing::pad(x, &pads, *mode, *fill, out_shape)?
            }
            Op::Reduce(r) => indexing::reduce(r, input_of(node, slots, 0)?, out_shape)?,
            Op::Slice { starts, ends, axes, steps } => {
                let x = input_of(node, slots, 0)?;
                let ranges = shape::slice_ranges(x.shape(), starts, ends, axes.as_deref(), steps.as_deref())?;
                indexing::slice(x, &ranges)?
            }
            Op::Gather { axis, indices, .. } => {
                let x = input_of(node, slots, 0)?;
                let axis = shape::normalize_axis(*axis, x.rank(), 0)?;
                indexing::gather(x, axis, indices, out_shape)?
            }
            Op::Resize(r) => resample::resize(r, input_of(node, slots, 0)?)?,
            Op::ConvTranspose(ct) => {
                let bias = node.inputs.get(2).copied().flatten().map(|id| value(slots, id)).transpose()?;
                resample::conv_transpose(
                    ct,
                    input_of(node, slots, 0)?,
                    input_of(node, slots, 1)?,
                    bias,
                    out_shape,
                    deadline,
                )?
            }
        })
    }

    /// Input `i` of the node, moved out to be overwritten with the output, when this node is
    /// its last reader, it is an owned intermediate of the output's shape, and the node reads it
    /// through no other input. Constants are never handed out.
    fn take_for_output(
        &self,
        index: usize,
        node: &super::ir::Node,
        i: usize,
        out_shape: &[usize],
        slots: &mut [Slot],
    ) -> Option<Tensor> {
        let id = node.inputs.get(i).copied().flatten()?;
        let shared = node.inputs.iter().enumerate().any(|(j, other)| j != i && *other == Some(id));
        if self.last_use[id] == index
            && !shared
            && matches!(&slots[id], Slot::Owned(t) if t.shape() == out_shape)
            && let Slot::Owned(t) = std::mem::replace(&mut slots[id], Slot::Empty)
        {
            return Some(t);
        }
        None
    }

    /// The tensor in `id`, moved out when this node is its last reader (so in-place ops and
    /// reshapes need no copy), cloned otherwise.
    fn take_or_clone(
        &self,
        index: usize,
        id: Option<ValueId>,
        slots: &mut [Slot],
    ) -> Result<Tensor, NnError> {
        let id = id.ok_or_else(|| NnError::invalid_argument(ArgumentFault::MissingInput { index: 0 }))?;
        // Only an owned intermediate may be moved out: replacing a constant's slot would lose
        // the constant (a Relu or Reshape of an initializer).
        if self.last_use[id] == index
            && matches!(slots[id], Slot::Owned(_))
            && let Slot::Owned(t) = std::mem::replace(&mut slots[id], Slot::Empty)
        {
            return Ok(t);
        }
        value(slots, id).cloned()
    }
}

fn value<'s>(slots: &'s [Slot], id: ValueId) -> Result<&'s Tensor, NnError> {
    match &slots[id] {
        Slot::Const(t) => Ok(t),
        Slot::Owned(t) => Ok(t),
        Slot::Empty => Err(NnError::runtime(RuntimeFault::ReadBeforeComputed { value: id })),
    }
}

fn input_of<'s>(node: &super::ir::Node, slots: &'s [Slot], i: usize) -> Result<&'s Tensor, NnError> {
    value(slots, node.required_input(i)?)
}

/// Multiply-add work of a node on the values in `slots`.
fn node_flops(node: &super::ir::Node, slots: &[Slot]) -> u64 {
    let shapes: Vec<Option<&[usize]>> =
        node.inputs.iter().map(|id| id.and_then(|id| value(slots, id).ok()).map(|t| t.shape())).collect();
    super::cost::node_flops(node, &shapes)
}
