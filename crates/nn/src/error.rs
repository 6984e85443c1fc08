//! The causes inside [`NnError`](crate::NnError): what exactly is wrong, as typed fields a
//! caller can match on, each with a message that names the values involved.

use std::fmt;

use crate::NnError;
use crate::ir;

/// A node as errors name it: its op and its name in the graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRef {
    /// The ONNX op type (`Conv`, `Reshape`).
    pub op: String,
    /// The node's name (or its first output's name when unnamed).
    pub name: String,
}

impl NodeRef {
    pub fn of(node: &ir::Node) -> NodeRef {
        NodeRef { op: node.op.onnx_name().to_string(), name: node.name.clone() }
    }
}

impl fmt::Display for NodeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} node `{}`", self.op, self.name)
    }
}

/// `Conv node `c`: <fault>`, or the fault alone where no node is known.
pub(crate) fn with_node_first(node: &Option<NodeRef>, fault: &impl fmt::Display) -> String {
    match node {
        Some(node) => format!("{node}: {fault}"),
        None => fault.to_string(),
    }
}

/// ` (Conv node `c`)`, or nothing where no node is known.
pub(crate) fn node_after(node: &Option<NodeRef>) -> String {
    node.as_ref().map_or(String::new(), |node| format!(" ({node})"))
}

/// Why a graph is malformed: part of [`NnError::InvalidGraph`].
#[derive(Debug, thiserror::Error)]
pub enum GraphFault {
    #[error("value `{value}` is defined twice")]
    DefinedTwice { value: String },
    #[error("graph output `{output}` is never computed")]
    OutputNeverComputed { output: String },
    #[error("the graph has no outputs")]
    NoOutputs,
    #[error("has no output")]
    NoOutput,
    #[error("needs input {index}")]
    MissingInput { index: usize },
    #[error("input {index} must be a scalar")]
    NotScalar { index: usize },
    #[error("input `{input}` is not defined before this node")]
    UndefinedInput { input: String },
    /// An attribute (or the constant input that stands for one) the node cannot do without.
    #[error("needs {what}")]
    Missing { what: String },
    /// An attribute whose value is malformed; `problem` says how.
    #[error("attribute `{name}` {problem}")]
    Attribute { name: String, problem: String },
    /// An index into a constant, folded at load, past its `len` values.
    #[error("index {index} is out of range for {len} values")]
    IndexOutOfRange { index: i64, len: usize },
    /// Weights, a bias or slopes that must be constants (they are packed at load).
    #[error("the {what} is not a constant")]
    NotConstant { what: &'static str },
    /// `got` biases or slopes for `channels` output channels.
    #[error("{got} {what} for {channels} channels")]
    PerChannel { what: &'static str, got: usize, channels: usize },
    /// Weights whose shape does not fit the node; `problem` says how.
    #[error("weights of shape {shape:?} {problem}")]
    Weights { shape: Vec<usize>, problem: String },
    /// What a backend could not prepare for the node.
    #[error("{source}")]
    Unpreparable { source: Box<NnError> },
}

/// What a run handed an op that the op cannot take: part of [`NnError::InvalidArgument`].
#[derive(Debug, thiserror::Error)]
pub enum ArgumentFault {
    /// Input shapes that break the op's rule; `rule` names the op, the shapes and the rule.
    #[error("{rule}")]
    Shapes { rule: String },
    #[error("missing input {index}")]
    MissingInput { index: usize },
    #[error("tensor of shape {shape:?} needs {expected} values, got {got}")]
    ValueCount { shape: Vec<usize>, expected: usize, got: usize },
    #[error("cannot reshape {from:?} ({values} values) to {to:?}")]
    Reshape { from: Vec<usize>, values: usize, to: Vec<usize> },
    #[error("Gather index {index} is out of range for dimension {dim} of {shape:?}")]
    IndexOutOfRange { index: i64, dim: usize, shape: Vec<usize> },
    #[error("Resize of an empty dimension of {shape:?}")]
    EmptyResizeAxis { shape: Vec<usize> },
    #[error("Pad: padding {pad} is out of range")]
    PadOutOfRange { pad: i64 },
    /// Shapes the GPU backend's kernels do not take (the CPU backend does); `limit` says which.
    #[error("{limit}")]
    GpuLimit { limit: String },
    /// A graph input the run's tensor cannot be; `problem` says why.
    #[error("input `{input}`: {problem}")]
    Input { input: String, problem: String },
    #[error("graph `{graph}` needs input `{input}` (its inputs: {inputs:?})")]
    MissingGraphInput { graph: String, input: String, inputs: Vec<String> },
    #[error("graph has no input named `{input}`")]
    UnknownGraphInput { input: String },
}

/// What is too large, and the limit it passes: part of [`NnError::TooLarge`].
#[derive(Debug, thiserror::Error)]
pub enum Excess {
    /// A size computation that does not fit in `usize`; `computation` names the op and its
    /// operands. Refused rather than wrapped into a small size.
    #[error("{computation} overflows")]
    Overflow { computation: String },
    #[error("tensor shape {shape:?} has more elements than fit in memory")]
    Elements { shape: Vec<usize> },
    #[error("tensor shape {shape:?} has more bytes than fit in memory")]
    Bytes { shape: Vec<usize> },
    #[error("{count} FP32 values have more bytes than fit in memory")]
    Fp32Values { count: usize },
    #[error("{} MiB of values cannot be allocated", .bytes >> 20)]
    Allocation { bytes: u64 },
    /// `what` (a tensor, a graph input) needs a GPU buffer of `bytes`, past the device's limit.
    #[error("{what} ({bytes} bytes) exceeds the largest buffer of the GPU ({limit} bytes)")]
    GpuBuffer { what: String, bytes: u64, limit: u64 },
    /// `what` is past the largest buffer binding of the GPU (`limit` bytes where known).
    #[error(
        "{what} exceeds the largest buffer binding of the GPU{}, and the GPU backend does not split this op",
        .limit.map_or(String::new(), |l| format!(" ({l} bytes)"))
    )]
    GpuBinding { what: String, limit: Option<u64> },
    #[error("a dispatch of {workgroups} workgroups exceeds the GPU's grid of {max} x {max}")]
    GpuGrid { workgroups: u64, max: u64 },
    #[error("{during}: the GPU is out of memory: {error}")]
    GpuOutOfMemory { during: String, error: String },
}

/// How a backend failed to run what it prepared: part of [`NnError::Runtime`].
#[derive(Debug, thiserror::Error)]
pub enum RuntimeFault {
    #[error("output `{output}` was not computed")]
    NotComputed { output: String },
    #[error("value #{value} is read before it is computed")]
    ReadBeforeComputed { value: usize },
    /// The GPU reported `error` during `during`.
    #[error("{during}: GPU error: {error}")]
    Gpu { during: String, error: String },
    #[error("no GPU kernel for this node ({choice})")]
    NoGpuKernel { choice: String },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Node, Op};

    fn concat_node() -> Node {
        Node {
            name: "joined".into(),
            op: Op::Concat { axis: 1 },
            inputs: vec![Some(0), Some(1)],
            outputs: vec![2],
        }
    }

    /// A shape overflow found while a node ran names the node, after the sizes (which stay
    /// first: operators and tests match on them).
    #[test]
    fn too_large_gets_the_node_it_was_raised_at() {
        let shape = vec![usize::MAX, 2];
        let err = NnError::too_large(Excess::Elements { shape: shape.clone() }).at(&concat_node());
        match &err {
            NnError::TooLarge { node: Some(node), excess: Excess::Elements { shape: s } } => {
                assert_eq!((node.op.as_str(), node.name.as_str(), s), ("Concat", "joined", &shape));
            }
            other => panic!("expected TooLarge at the node, got {other:?}"),
        }
        assert_eq!(
            err.to_string(),
            format!(
                "too large: tensor shape {shape:?} has more elements than fit in memory (Concat node `joined`)"
            )
        );
    }

    /// An argument error is wrapped with the node, its cause kept as the typed source.
    #[test]
    fn invalid_argument_is_wrapped_with_its_node() {
        let err = NnError::invalid_argument(ArgumentFault::MissingInput { index: 1 }).at(&concat_node());
        assert_eq!(err.to_string(), "Concat node `joined`: invalid argument: missing input 1");
        let source = std::error::Error::source(&err).expect("the argument error is the source");
        assert!(matches!(
            source.downcast_ref::<Box<NnError>>().map(|e| &**e),
            Some(NnError::InvalidArgument { fault: ArgumentFault::MissingInput { index: 1 } })
        ));
    }

    /// A node named by the importer keeps its name; `at` does not replace it.
    #[test]
    fn invalid_graph_keeps_the_node_it_names() {
        let named = NodeRef { op: "Reshape".into(), name: "flatten".into() };
        let err = NnError::InvalidGraph { node: Some(named.clone()), fault: GraphFault::NoOutput }
            .at(&concat_node());
        assert!(matches!(&err, NnError::InvalidGraph { node: Some(n), .. } if *n == named));
        assert_eq!(err.to_string(), "invalid graph: Reshape node `flatten`: has no output");
    }
}
