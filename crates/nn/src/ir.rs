//! The graph IR backends execute: ONNX semantics, attributes resolved, constants decoded.

use std::sync::Arc;

use super::{ArgumentFault, NnError, Tensor};

pub type ValueId = usize;

/// A computation graph in topological order.
#[derive(Clone, Debug)]
pub struct Graph {
    pub name: String,
    /// Every value the graph names; `ValueId` indexes this.
    pub values: Vec<Value>,
    pub inputs: Vec<GraphInput>,
    pub outputs: Vec<ValueId>,
    pub nodes: Vec<Node>,
}

#[derive(Clone, Debug)]
pub struct Value {
    pub name: String,
    /// Set for initializers (weights) and folded constants.
    pub constant: Option<Arc<Tensor>>,
}

#[derive(Clone, Debug)]
pub struct GraphInput {
    pub value: ValueId,
    /// Declared dimensions; `None` where the model leaves a dimension dynamic.
    pub dims: Vec<Option<usize>>,
}

#[derive(Clone, Debug)]
pub struct Node {
    /// The ONNX node name (or its first output's name when unnamed), for error messages.
    pub name: String,
    pub op: Op,
    /// Positional inputs; `None` for an omitted optional input.
    pub inputs: Vec<Option<ValueId>>,
    pub outputs: Vec<ValueId>,
}

impl Node {
    /// The value at input `i`, which the op needs (every backend refuses a missing one alike).
    pub fn required_input(&self, i: usize) -> Result<ValueId, NnError> {
        self.inputs
            .get(i)
            .copied()
            .flatten()
            .ok_or_else(|| NnError::invalid_argument(ArgumentFault::MissingInput { index: i }))
    }
}

impl Graph {
    pub fn value_name(&self, id: ValueId) -> &str {
        &self.values[id].name
    }

    pub fn constant(&self, id: ValueId) -> Option<&Arc<Tensor>> {
        self.values[id].constant.as_ref()
    }

    /// Checks that `inputs` are as many as the graph's inputs and fit their declared shapes
    /// (every backend refuses a run with the same message).
    pub fn check_inputs(&self, inputs: &[Tensor]) -> Result<(), NnError> {
        if inputs.len() != self.inputs.len() {
            return Err(NnError::InputCount {
                graph: self.name.clone(),
                expected: self.inputs.len(),
                got: inputs.len(),
            });
        }
        for (input, tensor) in self.inputs.iter().zip(inputs) {
            let declared = &input.dims;
            let fits = declared.is_empty()
                || declared.len() == tensor.rank()
                    && declared.iter().zip(tensor.shape()).all(|(d, &a)| d.is_none_or(|d| d == a));
            if !fits {
                return Err(NnError::InputShape {
                    input: self.value_name(input.value).to_string(),
                    expected: declared.clone(),
                    got: tensor.shape().to_vec(),
                });
            }
        }
        Ok(())
    }

    /// The names of the graph's inputs, in order.
    pub fn input_names(&self) -> impl Iterator<Item = &str> {
        self.inputs.iter().map(|i| self.value_name(i.value))
    }

    /// The names of the graph's outputs, in order.
    pub fn output_names(&self) -> impl Iterator<Item = &str> {
        self.outputs.iter().map(|&o| self.value_name(o))
    }

    /// Per value, the index of the last node that reads it (`usize::MAX` for graph outputs,
    /// which outlive every node): where a backend may free it.
    pub fn last_uses(&self) -> Vec<usize> {
        let mut last_use = vec![0; self.values.len()];
        for (i, node) in self.nodes.iter().enumerate() {
            node.inputs.iter().flatten().for_each(|&id| last_use[id] = i);
        }
        self.outputs.iter().for_each(|&id| last_use[id] = usize::MAX);
        last_use
    }

    /// How many node inputs and graph outputs read each value.
    pub fn use_counts(&self) -> Vec<usize> {
        let mut uses = vec![0; self.values.len()];
        for node in &self.nodes {
            for id in node.inputs.iter().flatten() {
                uses[*id] += 1;
            }
        }
        for &id in &self.outputs {
            uses[id] += 1;
        }
        uses
    }

    /// Adds a constant value and returns its id.
    pub fn add_constant(&mut self, name: String, tensor: Tensor) -> ValueId {
        self.values.push(Value { name, constant: Some(Arc::new(tensor)) });
        self.values.len() - 1
    }
}

#[derive(Clone, Debug)]
pub enum Op {
    /// 2-D convolution. Inputs: X [N,C,H,W], W [M,C/group,kh,kw] (constant), optional B [M].
    Conv(Conv),
    /// Inputs: A, B, optional C (broadcast to the result).
    Gemm(Gemm),
    /// numpy-style matrix product with broadcast batch dimensions.
    MatMul,
    Pool(Pool),
    GlobalPool(PoolKind),
    Unary(Unary),
    /// Inputs: X, slope (broadcast to X).
    PRelu,
    Binary(Binary),
    /// Inference-mode batch normalization. Inputs: X, scale, bias, mean, var.
    BatchNorm {
        epsilon: f32,
    },
    /// `coerce_2d`: opset < 13 semantics (softmax over all dimensions from `axis` on).
    Softmax {
        axis: i64,
        coerce_2d: bool,
    },
    Flatten {
        axis: i64,
    },
    /// Target shape with ONNX's 0 (copy) and -1 (infer) entries.
    Reshape {
        shape: Vec<i64>,
        allow_zero: bool,
    },
    /// `None`: reverse the dimensions.
    Transpose {
        perm: Option<Vec<usize>>,
    },
    Concat {
        axis: i64,
    },
    /// `pads` is ONNX's [begin_0, begin_1, ..., end_0, end_1, ...] over `axes` (all
    /// dimensions when `None`); `value` fills in constant mode.
    Pad {
        pads: Vec<i64>,
        value: f32,
        mode: PadMode,
        axes: Option<Vec<i64>>,
    },
    Squeeze {
        axes: Option<Vec<i64>>,
    },
    Unsqueeze {
        axes: Vec<i64>,
    },
    /// ReduceSum / ReduceMean over `axes` (`None`: all of them, or none when
    /// `noop_with_empty_axes`).
    Reduce(Reduce),
    /// Starts, ends, axes and steps as ONNX gives them; clamped against the input's shape
    /// when it runs.
    Slice {
        starts: Vec<i64>,
        ends: Vec<i64>,
        axes: Option<Vec<i64>>,
        steps: Option<Vec<i64>>,
    },
    /// Gather of float data along `axis` at constant `indices` of shape `indices_shape`.
    Gather {
        axis: i64,
        indices: Arc<Vec<i64>>,
        indices_shape: Vec<usize>,
    },
    /// Resize, and Upsample (opset < 10) expressed as a Resize.
    Resize(Resize),
    /// 2-D transposed convolution. Inputs: X [N,C,H,W], W [C,M/group,kh,kw], optional B [M].
    ConvTranspose(ConvTranspose),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PadMode {
    Constant,
    Reflect,
    Edge,
    Wrap,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceKind {
    Sum,
    Mean,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Reduce {
    pub kind: ReduceKind,
    pub axes: Option<Vec<i64>>,
    pub keepdims: bool,
    pub noop_with_empty_axes: bool,
}

/// How Resize maps an output coordinate to an input one (ONNX `coordinate_transformation_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoordinateMode {
    HalfPixel,
    HalfPixelSymmetric,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
}

/// ONNX `nearest_mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NearestMode {
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResizeMode {
    Nearest(NearestMode),
    /// Linear along every resized axis (bilinear on images).
    Linear,
}

/// Resize's target: per-axis scales, or output sizes.
#[derive(Clone, Debug, PartialEq)]
pub enum ResizeTarget {
    Scales(Vec<f32>),
    Sizes(Vec<i64>),
}

/// ONNX `keep_aspect_ratio_policy` (with sizes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AspectPolicy {
    Stretch,
    NotLarger,
    NotSmaller,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Resize {
    pub mode: ResizeMode,
    pub coordinates: CoordinateMode,
    pub target: ResizeTarget,
    /// The axes `target` covers (all, in order, when `None`).
    pub axes: Option<Vec<i64>>,
    pub aspect: AspectPolicy,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ConvTranspose {
    /// The padding: explicit [top, left, bottom, right] pads, or SAME_* computed from the
    /// output shape.
    pub window: Window,
    pub group: usize,
    pub output_padding: [usize; 2],
    /// ONNX `output_shape` (spatial), which decides the padding when given.
    pub output_shape: Option<[usize; 2]>,
}

impl Op {
    /// The ONNX op name this op came from, for messages.
    pub fn onnx_name(&self) -> &'static str {
        match self {
            Op::Conv(_) => "Conv",
            Op::Gemm(_) => "Gemm",
            Op::MatMul => "MatMul",
            Op::Pool(p) => match p.kind {
                PoolKind::Max => "MaxPool",
                PoolKind::Average => "AveragePool",
            },
            Op::GlobalPool(PoolKind::Max) => "GlobalMaxPool",
            Op::GlobalPool(PoolKind::Average) => "GlobalAveragePool",
            Op::Unary(u) => u.onnx_name(),
            Op::PRelu => "PRelu",
            Op::Binary(b) => b.onnx_name(),
            Op::BatchNorm { .. } => "BatchNormalization",
            Op::Softmax { .. } => "Softmax",
            Op::Flatten { .. } => "Flatten",
            Op::Reshape { .. } => "Reshape",
            Op::Transpose { .. } => "Transpose",
            Op::Concat { .. } => "Concat",
            Op::Pad { .. } => "Pad",
            Op::Squeeze { .. } => "Squeeze",
            Op::Unsqueeze { .. } => "Unsqueeze",
            Op::Reduce(r) => match r.kind {
                ReduceKind::Sum => "ReduceSum",
                ReduceKind::Mean => "ReduceMean",
            },
            Op::Slice { .. } => "Slice",
            Op::Gather { .. } => "Gather",
            Op::Resize(_) => "Resize",
            Op::ConvTranspose(_) => "ConvTranspose",
        }
    }
}

/// The sliding window of a 2-D convolution or pooling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub kernel: [usize; 2],
    pub strides: [usize; 2],
    pub dilations: [usize; 2],
    pub padding: Padding,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Conv {
    pub window: Window,
    pub group: usize,
    /// Applied to the output after the bias (and the residual); set by `optimize`.
    pub activation: Activation,
    /// Whether input 3 is added to the output before the activation: an `Add` fused into the
    /// conv by [`crate::optimize::fuse_residual_adds`], which only the CPU backend runs.
    pub residual: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Gemm {
    pub alpha: f32,
    pub beta: f32,
    pub trans_a: bool,
    pub trans_b: bool,
    /// Applied to the result; set by `optimize`.
    pub activation: Activation,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Average,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Pool {
    pub kind: PoolKind,
    pub window: Window,
    pub ceil_mode: bool,
    /// AveragePool: count padded cells in the divisor.
    pub count_include_pad: bool,
}

/// Spatial padding of a convolution or pooling window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    Explicit {
        top: usize,
        left: usize,
        bottom: usize,
        right: usize,
    },
    /// Output size ceil(input / stride); the odd padding cell goes at the end.
    SameUpper,
    /// As `SameUpper`, the odd padding cell at the beginning.
    SameLower,
}

impl Padding {
    pub const NONE: Padding = Padding::Explicit { top: 0, left: 0, bottom: 0, right: 0 };
}

/// An activation fused into the op that produces its input.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Activation {
    #[default]
    None,
    Relu,
    LeakyRelu(f32),
    /// One slope per output channel (Conv) or per output column (Gemm).
    PRelu(Arc<Tensor>),
}

impl Activation {
    /// Applies the activation to `value`, which belongs to channel/column `channel`.
    #[inline(always)]
    pub fn apply(&self, value: f32, channel: usize) -> f32 {
        match self {
            Activation::None => value,
            Activation::Relu => value.max(0.0),
            Activation::LeakyRelu(alpha) => {
                if value < 0.0 {
                    value * alpha
                } else {
                    value
                }
            }
            Activation::PRelu(slopes) => {
                if value < 0.0 {
                    value * slopes.data()[channel]
                } else {
                    value
                }
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unary {
    Relu,
    LeakyRelu(f32),
    Sigmoid,
    Tanh,
    Clip {
        min: f32,
        max: f32,
    },
    /// Identity, and Dropout in inference.
    Identity,
    Sqrt,
    Exp,
    /// max(0, min(1, alpha * x + beta))
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    /// x * max(0, min(1, x / 6 + 1 / 2))
    HardSwish,
}

impl Unary {
    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Unary::Relu => x.max(0.0),
            Unary::LeakyRelu(alpha) => {
                if x < 0.0 {
                    x * alpha
                } else {
                    x
                }
            }
            Unary::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Unary::Tanh => x.tanh(),
            Unary::Clip { min, max } => x.max(min).min(max),
            Unary::Identity => x,
            Unary::Sqrt => x.sqrt(),
            Unary::Exp => x.exp(),
            Unary::HardSigmoid { alpha, beta } => (alpha * x + beta).clamp(0.0, 1.0),
            Unary::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
        }
    }

    fn onnx_name(self) -> &'static str {
        match self {
            Unary::Relu => "Relu",
            Unary::LeakyRelu(_) => "LeakyRelu",
            Unary::Sigmoid => "Sigmoid",
            Unary::Tanh => "Tanh",
            Unary::Clip { .. } => "Clip",
            Unary::Identity => "Identity",
            Unary::Sqrt => "Sqrt",
            Unary::Exp => "Exp",
            Unary::HardSigmoid { .. } => "HardSigmoid",
            Unary::HardSwish => "HardSwish",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    /// Element-wise maximum (Clip with a run-time lower bound).
    Max,
    /// Element-wise minimum (Clip with a run-time upper bound).
    Min,
}

impl Binary {
    #[inline(always)]
    pub fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            Binary::Add => a + b,
            Binary::Sub => a - b,
            Binary::Mul => a * b,
            Binary::Div => a / b,
            Binary::Pow => a.powf(b),
            // NaN propagates, as numpy's maximum/minimum do.
            Binary::Max => {
                if a.is_nan() || a > b {
                    a
                } else {
                    b
                }
            }
            Binary::Min => {
                if a.is_nan() || a < b {
                    a
                } else {
                    b
                }
            }
        }
    }

    fn onnx_name(self) -> &'static str {
        match self {
            Binary::Add => "Add",
            Binary::Sub => "Sub",
            Binary::Mul => "Mul",
            Binary::Div => "Div",
            Binary::Pow => "Pow",
            Binary::Max => "Max",
            Binary::Min => "Min",
        }
    }
}
