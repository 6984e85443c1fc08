//! The neural-network host: ONNX import into a small graph IR, and backends that execute it.
//!
//! `onnx` turns protobuf into [`ir::Graph`]; [`optimize`] folds batch norms and fuses
//! activations; a [`Backend`] prepares a graph once (packing weights) and then runs it many
//! times. Backends never see protobuf, and the wasi-nn host (`runtime::wasi_nn`) never sees
//! backend internals.

pub mod cost;
#[cfg(feature = "cpu")]
pub mod cpu;
mod device;
mod error;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod ir;
pub mod onnx;
mod optimize;
pub mod shape;
mod spare;
mod tensor;

use std::sync::Arc;
use std::time::Instant;

pub use cost::Cost;
pub use device::{ChosenBackend, Device, DeviceError, choose_backend, set_threads};
pub use error::{ArgumentFault, Excess, GraphFault, NodeRef, RuntimeFault};
pub use ir::Graph;
pub use optimize::{fuse_residual_adds, optimize};
pub use spare::{keep_spare_values, take_spare_values};
pub use tensor::{Tensor, element_count, zeroed_values};

#[derive(Debug, thiserror::Error)]
pub enum NnError {
    #[error("not a valid ONNX model: {0}")]
    InvalidEncoding(Encoding),
    /// What refacen cannot run, found at load (import or a backend's prepare): the op, the
    /// node, and what exactly (the op itself, an attribute's value, an input).
    /// `op` is the ONNX op type, or for what is not a node "graph input", "graph output" or
    /// "initializer" (then `node` is the value's name).
    #[error("{}", unsupported_message(.op, .node, .detail))]
    UnsupportedOp { op: String, node: String, detail: Unsupported },
    /// The graph itself is malformed (found at import or a backend's prepare); `node` is the
    /// node at fault where there is one.
    #[error("invalid graph: {}", error::with_node_first(.node, .fault))]
    InvalidGraph { node: Option<NodeRef>, fault: GraphFault },
    /// What a run handed an op (the graph's inputs, or the values a node receives) that the op
    /// cannot take. [`NnError::at`] wraps it in [`NnError::Node`] with the node.
    #[error("invalid argument: {fault}")]
    InvalidArgument { fault: ArgumentFault },
    /// A run given another number of inputs than the graph takes.
    #[error("invalid argument: graph `{graph}` takes {expected} inputs, got {got}")]
    InputCount { graph: String, expected: usize, got: usize },
    /// A run's input whose shape does not fit the graph input's declared dimensions (`None`:
    /// any length).
    #[error("invalid argument: input `{input}` must have shape [{}], got {got:?}", dims_pattern(.expected))]
    InputShape { input: String, expected: Vec<Option<usize>>, got: Vec<usize> },
    /// A size past what the host or the GPU can hold; `node` is the node whose sizes it is,
    /// where known.
    #[error("too large: {excess}{}", error::node_after(.node))]
    TooLarge { node: Option<NodeRef>, excess: Excess },
    /// A run would create a tensor over its limit ([`RunLimits`], on the GPU also 2^32 - 1
    /// elements); `producer` says what would create it (a node, or a graph input).
    #[error(
        "too large: {producer} would create a tensor of shape {shape:?} ({elements} values; the limit is {limit})"
    )]
    TensorLimit { producer: String, shape: Vec<usize>, elements: usize, limit: usize },
    /// A backend failed to run what it prepared. [`NnError::at`] wraps it in
    /// [`NnError::Node`] with the node.
    #[error("{fault}")]
    Runtime { fault: RuntimeFault },
    #[error("the run passed its deadline and was stopped")]
    DeadlineExceeded,
    /// A node failed while its graph ran; `source` says how.
    #[error("{op} node `{node}`: {source}")]
    Node { op: &'static str, node: String, source: Box<NnError> },
}

impl NnError {
    /// This error as raised by `node` while its graph ran: wrapped with the node, or the node
    /// filled in where the error has a place for it, unless it already names what it refuses
    /// (limits, deadlines, unsupported ops).
    pub fn at(self, node: &ir::Node) -> NnError {
        match self {
            NnError::InvalidArgument { .. } | NnError::Runtime { .. } => {
                NnError::Node { op: node.op.onnx_name(), node: node.name.clone(), source: Box::new(self) }
            }
            NnError::InvalidGraph { node: None, fault } => {
                NnError::InvalidGraph { node: Some(NodeRef::of(node)), fault }
            }
            NnError::TooLarge { node: None, excess } => {
                NnError::TooLarge { node: Some(NodeRef::of(node)), excess }
            }
            other => other,
        }
    }

    pub fn invalid_graph(fault: GraphFault) -> NnError {
        NnError::InvalidGraph { node: None, fault }
    }

    pub fn invalid_argument(fault: ArgumentFault) -> NnError {
        NnError::InvalidArgument { fault }
    }

    pub fn too_large(excess: Excess) -> NnError {
        NnError::TooLarge { node: None, excess }
    }

    pub fn runtime(fault: RuntimeFault) -> NnError {
        NnError::Runtime { fault }
    }
}

/// Declared dimensions as `1, 3, ?, ?` (`?` for a dimension of any length).
fn dims_pattern(dims: &[Option<usize>]) -> String {
    let shown: Vec<String> = dims.iter().map(|d| d.map_or("?".to_string(), |d| d.to_string())).collect();
    shown.join(", ")
}

/// Why bytes are not a valid ONNX model: part of [`NnError::InvalidEncoding`], whose message
/// includes it (so it is not also a `source`: wasi-nn guests see only the message).
#[derive(Debug, thiserror::Error)]
pub enum Encoding {
    #[error("protobuf decoding failed: {0}")]
    Protobuf(prost::DecodeError),
    #[error("the model has no graph")]
    NoGraph,
    #[error("tensor `{tensor}`: weights stored in an external file are not supported; embed them")]
    ExternalData { tensor: String },
    #[error("tensor `{tensor}`: negative dimension {dim}")]
    NegativeDimension { tensor: String, dim: i64 },
    /// The tensor holds `len` values where its shape `dims` needs `expected`.
    #[error("tensor `{tensor}`: holds {len} values, its shape {dims:?} needs {expected}")]
    ValueCount { tensor: String, len: usize, dims: Vec<usize>, expected: usize },
}

fn unsupported_message(op: &str, node: &str, detail: &Unsupported) -> String {
    // ONNX op types are capitalized; the graph's inputs, outputs and initializers are not nodes.
    if op.starts_with(char::is_lowercase) {
        format!("{op} `{node}`: {detail}")
    } else {
        format!("{op} node `{node}`: {detail}")
    }
}

/// Why an ONNX node cannot be run: part of [`NnError::UnsupportedOp`].
#[derive(Debug, Clone, PartialEq)]
pub enum Unsupported {
    /// refacen has no implementation of the op at all.
    Op,
    /// The op from a custom domain.
    Domain(String),
    /// An attribute (or a parameter input) has a value refacen does not implement.
    Attribute { name: String, value: String, supported: &'static str },
    /// Input `index` (`name`) changes at run time, but refacen needs it at load (weights are
    /// packed once; shapes, axes and pads fix the kernels). Make it an initializer.
    DynamicInput { index: usize, name: String },
    /// Shape of a value whose shape is only known at run time (refacen folds Shape at load).
    DynamicShape { value: String },
    /// A tensor of an element type refacen does not compute with (it computes in float32).
    ElementType { value: String, elem_type: String },
    /// An optional output refacen does not compute (e.g. a mask or argmax indices), read by a
    /// node or a graph output.
    Output { index: usize, what: &'static str },
}

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unsupported::Op => write!(f, "refacen does not support this op"),
            Unsupported::Domain(d) => write!(f, "ops of the custom domain `{d}` are not supported"),
            Unsupported::Attribute { name, value, supported } => {
                write!(f, "{name} = {value} is not supported (refacen supports {supported})")
            }
            Unsupported::DynamicInput { index, name } => write!(
                f,
                "input {index} `{name}` must be a constant (an initializer): refacen needs it when the \
                 graph loads"
            ),
            Unsupported::DynamicShape { value } => write!(
                f,
                "the shape of `{value}` is only known at run time; refacen computes Shape when the graph \
                 loads, so the graph's inputs need fixed dimensions"
            ),
            Unsupported::ElementType { value, elem_type } => write!(
                f,
                "`{value}` has element type {elem_type}; refacen computes in float32 (int64 only in \
                 constants folded at load)"
            ),
            Unsupported::Output { index, what } => {
                write!(
                    f,
                    "output {index} ({what}) is not computed by refacen; nothing in the graph may read it"
                )
            }
        }
    }
}

/// When a run must give up: the deadline of the guest call it runs for. Backends check it
/// between nodes and inside kernels long enough to matter, so that a graph cheap in memory
/// but huge in work cannot hold a worker past the call's time limit.
#[derive(Clone, Copy, Debug, Default)]
pub struct Deadline(Option<Instant>);

impl Deadline {
    /// No deadline (benchmarks, tests, trusted callers).
    pub const NONE: Deadline = Deadline(None);

    pub fn at(instant: Instant) -> Self {
        Deadline(Some(instant))
    }

    pub fn expired(&self) -> bool {
        self.0.is_some_and(|at| Instant::now() >= at)
    }

    pub fn check(&self) -> Result<(), NnError> {
        if self.expired() { Err(NnError::DeadlineExceeded) } else { Ok(()) }
    }
}

/// Limits every backend enforces so that a graph cannot exhaust the host's memory.
#[derive(Clone, Copy, Debug)]
pub struct RunLimits {
    /// Largest tensor (input, intermediate or output) a run may create, in f32 elements.
    pub max_tensor_elements: usize,
}

impl Default for RunLimits {
    fn default() -> Self {
        // 1 GiB of f32: far above what MTCNN or a ResNet need on a 4K photo.
        RunLimits { max_tensor_elements: 1 << 28 }
    }
}

/// Executes graphs. One implementation per device family (CPU, wgpu).
pub trait Backend: Send + Sync {
    /// A short name for logs, e.g. "cpu".
    fn name(&self) -> &str;

    /// Prepares `graph` for repeated runs: validates it, packs weights, uploads them.
    fn prepare(&self, graph: Arc<Graph>) -> Result<Arc<dyn Executable>, NnError>;

    /// Whether graphs run on another device, leaving the host's cores to the callers (so
    /// callers may run more photos at once than there are cores' worth of graph work).
    fn offloads(&self) -> bool {
        false
    }
}

/// A graph prepared by a backend.
pub trait Executable: Send + Sync {
    /// Runs the graph on `inputs`, given in the order of `Graph::inputs`, and returns the
    /// outputs in the order of `Graph::outputs`; stops with [`NnError::DeadlineExceeded`]
    /// soon after `deadline`.
    fn run_until(&self, inputs: Vec<Tensor>, deadline: Deadline) -> Result<Vec<Tensor>, NnError>;

    /// [`Self::run_until`] with no deadline.
    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, NnError> {
        self.run_until(inputs, Deadline::NONE)
    }
}

/// Time spent in one node during a profiled run.
#[derive(Clone, Debug)]
pub struct NodeTiming {
    pub node: String,
    pub op: &'static str,
    pub output_shape: Vec<usize>,
    pub elapsed: std::time::Duration,
    /// Floating-point operations (multiply and add counted apart) of a Conv/Gemm/MatMul node.
    pub flops: u64,
}

impl NodeTiming {
    /// A profiled run of `nodes` nodes: `run` records each node's time in the vector it gets.
    #[cfg_attr(not(any(feature = "cpu", feature = "gpu")), allow(dead_code))]
    pub(crate) fn collect(
        nodes: usize,
        run: impl FnOnce(&mut Vec<NodeTiming>) -> Result<Vec<Tensor>, NnError>,
    ) -> Result<(Vec<Tensor>, Vec<NodeTiming>), NnError> {
        let mut timings = Vec::with_capacity(nodes);
        let outputs = run(&mut timings)?;
        Ok((outputs, timings))
    }
}

/// Parses an ONNX model and optimizes it for execution.
pub fn load_onnx(bytes: &[u8]) -> Result<Graph, NnError> {
    let graph = onnx::import(bytes)?;
    Ok(optimize(graph))
}
