//! dlib's face-recognition ResNet (`dlib_face_recognition_resnet_model_v1.dat`) as an ONNX
//! graph.
//!
//! The network type is the `anet_type` of dlib's tools/python/src/face_recognition.cpp:
//!
//! ```text
//! loss_metric<fc_no_bias<128, avg_pool_everything<
//!     alevel0<alevel1<alevel2<alevel3<alevel4<
//!     max_pool<3,3,2,2, relu<affine<con<32,7,7,2,2, input_rgb_image_sized<150>>>>>>>>>>>>>
//! ```
//!
//! with `ares<N>` = relu<add_prev1<block<N, stride 1, tag1<·>>>> and `ares_down<N>` =
//! relu<add_prev2<avg_pool<2,2,2,2, skip1<tag2<block<N, stride 2, tag1<·>>>>>>>, `block<N,s>` =
//! affine<con<N,3,3,1,1, relu<affine<con<N,3,3,s,s, ·>>>>>. The semantics mapped to ONNX
//! (opset 13), following dlib's CPU code:
//!
//! - input: `(pixel - mean[c]) / 256` with the means stored in the file (122.782, 117.001,
//!   104.298), planar RGB; the graph takes pixel values 0..255 as float32 `[N, 3, 150, 150]`
//!   and does the normalization itself (Sub, Mul by 1/256: both exact as dlib's are);
//! - `con_`: a Conv (cross-correlation, weights `[out, in, rows, cols]` as dlib stores them),
//!   padded by the padding stored in the file, which is dlib's default: `size / 2` when the
//!   stride is 1, else 0 (so the 7x7/2 stem and the 3x3/2 downsampling convs are unpadded);
//! - `affine_` (conv mode): `x·gamma + beta` per channel, as Mul and Add of `[C, 1, 1]`
//!   constants (refacen's optimizer folds them into the preceding Conv);
//! - `max_pool_`/`avg_pool_`: dlib's windows are clipped to the input and its output size is
//!   `1 + (in + 2·pad - window) / stride` (floor): MaxPool/AveragePool with ceil_mode 0 and
//!   count_include_pad 0 (all pools of this network are unpadded anyway);
//!   `avg_pool_everything` (a 0x0 window) is GlobalAveragePool;
//! - `add_prev_`: dlib adds tensors of different shapes by padding both with zeros at the
//!   end of each dimension (tt::add). In `ares_down` the skip path has fewer channels than the
//!   block (32→64, 64→128, 128→256) and, at 8x8 and 4x4, one more row and column (avg_pool
//!   2x2/2 of 8 gives 4, an unpadded 3x3/2 conv gives 3): the smaller operand is Pad-ded with
//!   zeros at the end of channels, rows and columns before the Add;
//! - `fc_<128, FC_NO_BIAS>`: Flatten and MatMul by the `[inputs, outputs]` weights;
//! - `loss_metric_`: the output is the fc output itself (no normalization), named `facen`.

use std::collections::HashMap;

use anyhow::{Context, Result, bail, ensure};
use onnx_proto::ModelProto;
use onnx_proto::build::{self, Dim, attr_int};

use super::dlib::{Details, Input, InputSpec, Layer, LossSpec, Network};
use super::onnx_graph::{GraphBuilder, window_attrs};

/// The graph's input: float32 RGB pixel values 0..255, `[N, 3, 150, 150]`.
pub const INPUT: &str = "image";
/// The graph's output: `[N, 128]`, the descriptors as dlib returns them.
pub const OUTPUT: &str = "facen";

/// The C++ type of `dlib_face_recognition_resnet_model_v1.dat`, outermost layer first.
pub fn face_recognition_v1() -> (LossSpec, Vec<Layer>, InputSpec) {
    let mut layers = vec![
        Layer::Fc { outputs: 128, has_bias: false },
        // avg_pool_everything = avg_pool<0,0,1,1>
        Layer::AvgPool { size: [0, 0], stride: [1, 1] },
    ];
    // alevel0
    ares_down(&mut layers, 256);
    // alevel1
    ares(&mut layers, 256);
    ares(&mut layers, 256);
    ares_down(&mut layers, 256);
    // alevel2
    ares(&mut layers, 128);
    ares(&mut layers, 128);
    ares_down(&mut layers, 128);
    // alevel3
    for _ in 0..3 {
        ares(&mut layers, 64);
    }
    ares_down(&mut layers, 64);
    // alevel4
    for _ in 0..3 {
        ares(&mut layers, 32);
    }
    layers.extend([
        Layer::MaxPool { size: [3, 3], stride: [2, 2] },
        Layer::Relu,
        Layer::Affine,
        Layer::Con { filters: 32, size: [7, 7], stride: [2, 2] },
    ]);
    (LossSpec::Metric, layers, InputSpec::RgbImageSized { rows: 150, cols: 150 })
}

/// `block<N, affine, stride>`, outermost first.
fn block(layers: &mut Vec<Layer>, n: usize, stride: usize) {
    layers.extend([
        Layer::Affine,
        Layer::Con { filters: n, size: [3, 3], stride: [1, 1] },
        Layer::Relu,
        Layer::Affine,
        Layer::Con { filters: n, size: [3, 3], stride: [stride, stride] },
    ]);
}

/// `ares<N>` = relu<add_prev1<block<N, affine, 1, tag1<·>>>>.
fn ares(layers: &mut Vec<Layer>, n: usize) {
    layers.extend([Layer::Relu, Layer::AddPrev { tag: 1 }]);
    block(layers, n, 1);
    layers.push(Layer::Tag(1));
}

/// `ares_down<N>` = relu<add_prev2<avg_pool<2,2,2,2, skip1<tag2<block<N, affine, 2, tag1<·>>>>>>>.
fn ares_down(layers: &mut Vec<Layer>, n: usize) {
    layers.extend([
        Layer::Relu,
        Layer::AddPrev { tag: 2 },
        Layer::AvgPool { size: [2, 2], stride: [2, 2] },
        Layer::Skip(1),
        Layer::Tag(2),
    ]);
    block(layers, n, 2);
    layers.push(Layer::Tag(1));
}

/// A value of the graph being built and its shape without the batch dimension.
#[derive(Clone, Debug)]
struct Value {
    name: String,
    /// `[C, H, W]`, or `[features]` after the fully connected layer.
    shape: Vec<usize>,
}

/// A dlib `con_` as a Conv node `name` (plus a Relu when dlib fused one): its output.
pub(super) fn conv(b: &mut GraphBuilder, name: &str, x: &str, details: &Details) -> Result<String> {
    let Details::Con { weight_dims, weights, bias, stride, padding, relu } = details else {
        bail!("{name}: not a con_ layer");
    };
    let [out, _, kh, kw] = *weight_dims;
    let w = b.constant(&format!("{name}/weights"), weight_dims, weights);
    let mut inputs = vec![x.to_string(), w];
    if let Some(bias) = bias {
        inputs.push(b.constant(&format!("{name}/bias"), &[out], bias));
    }
    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let [py, px] = *padding;
    let y = b.conv(name, &inputs, [kh, kw], *stride, [py, px, py, px]);
    Ok(if *relu { b.op("Relu", &format!("{name}/relu"), &[&y], vec![]) } else { y })
}

/// A dlib `affine_` (conv mode) as Mul and Add of `[C, 1, 1]` constants: its output.
pub(super) fn affine(b: &mut GraphBuilder, name: &str, x: &str, gamma: &[f32], beta: &[f32]) -> String {
    let c = gamma.len();
    let g = b.constant(&format!("{name}/gamma"), &[c, 1, 1], gamma);
    let be = b.constant(&format!("{name}/beta"), &[c, 1, 1], beta);
    let scaled = b.op("Mul", &format!("{name}/scaled"), &[x, &g], vec![]);
    b.op("Add", name, &[&scaled, &be], vec![])
}

/// Zero-pads `x` at the end of its channel, row and column dimensions to `shape`.
fn pad_to(b: &mut GraphBuilder, x: &Value, shape: &[usize], name: &str) -> Value {
    if x.shape == shape {
        return x.clone();
    }
    let mut pads = vec![0i64; 8];
    for (axis, (&have, &want)) in x.shape.iter().zip(shape).enumerate() {
        pads[4 + 1 + axis] = (want - have) as i64;
    }
    let pads = b.int_constant(&format!("{name}/pads"), &pads);
    let out = b.op("Pad", name, &[&x.name, &pads], vec![build::attr_string("mode", "constant")]);
    Value { name: out, shape: shape.to_vec() }
}

/// dlib's output size of a convolution or pooling window (floor).
fn window_output(input: usize, window: usize, stride: usize, padding: usize, what: &str) -> Result<usize> {
    let padded = input + 2 * padding;
    ensure!(window <= padded, "{what}: a {window} window does not fit a padded input of {padded}");
    Ok(1 + (padded - window) / stride)
}

/// Builds the ONNX model of `network`, a face-recognition ResNet read by
/// [`super::dlib::read_network`].
pub fn build_model(network: &Network, doc: &str) -> Result<ModelProto> {
    let mut b = GraphBuilder::default();
    let Input::Sized(input) = &network.input else {
        bail!("the network's input is not input_rgb_image_sized")
    };

    // (pixel - mean) / 256, as dlib's input_rgb_image_sized::to_tensor.
    let mean = b.constant("input/mean", &[3, 1, 1], &input.mean);
    let scale = b.constant("input/scale", &[], &[1.0 / 256.0]);
    let centered = b.op("Sub", "input/centered", &[INPUT, &mean], vec![]);
    let normalized = b.op("Mul", "input/normalized", &[&centered, &scale], vec![]);
    let mut x = Value { name: normalized, shape: vec![3, input.rows, input.cols] };

    let mut tags: HashMap<u32, Value> = HashMap::new();
    // Innermost first; a layer's name is its index from the top (0: the fc layer).
    for (i, details) in network.layers.iter().enumerate().rev() {
        let name = |what: &str| format!("l{i:03}/{what}");
        x = match details {
            Details::Con { weight_dims, stride, padding, .. } => {
                let [out, in_channels, kh, kw] = *weight_dims;
                ensure!(x.shape.len() == 3 && x.shape[0] == in_channels, "layer {i}: con on {:?}", x.shape);
                let h = window_output(x.shape[1], kh, stride[0], padding[0], &name("con"))?;
                let w = window_output(x.shape[2], kw, stride[1], padding[1], &name("con"))?;
                let y = conv(&mut b, &name("con"), &x.name, details)?;
                Value { name: y, shape: vec![out, h, w] }
            }
            Details::Affine { gamma, beta } => {
                let c = x.shape[0];
                ensure!(
                    x.shape.len() == 3 && gamma.len() == c,
                    "layer {i}: affine of {} on {:?}",
                    gamma.len(),
                    x.shape
                );
                let y = affine(&mut b, &name("affine"), &x.name, gamma, beta);
                Value { name: y, shape: x.shape }
            }
            Details::Disabled => x,
            Details::Relu => Value { name: b.op("Relu", &name("relu"), &[&x.name], vec![]), shape: x.shape },
            Details::MaxPool { size, stride, padding } | Details::AvgPool { size, stride, padding } => {
                let is_max = matches!(details, Details::MaxPool { .. });
                ensure!(x.shape.len() == 3, "layer {i}: pooling on {:?}", x.shape);
                if *size == [0, 0] {
                    // dlib: a window of the whole input, stride 1, no padding: one value.
                    ensure!(*padding == [0, 0], "layer {i}: padded global pooling");
                    let op = if is_max { "GlobalMaxPool" } else { "GlobalAveragePool" };
                    let y = b.op(
                        op,
                        &name(if is_max { "global_max_pool" } else { "global_avg_pool" }),
                        &[&x.name],
                        vec![],
                    );
                    Value { name: y, shape: vec![x.shape[0], 1, 1] }
                } else {
                    let h = window_output(x.shape[1], size[0], stride[0], padding[0], &name("pool"))?;
                    let w = window_output(x.shape[2], size[1], stride[1], padding[1], &name("pool"))?;
                    let [py, px] = *padding;
                    let mut attrs = window_attrs(*size, *stride, [py, px, py, px]);
                    if !is_max {
                        // dlib averages over the window clipped to the input.
                        attrs.push(attr_int("count_include_pad", 0));
                    }
                    let op = if is_max { "MaxPool" } else { "AveragePool" };
                    let y = b.op(op, &name(if is_max { "max_pool" } else { "avg_pool" }), &[&x.name], attrs);
                    Value { name: y, shape: vec![x.shape[0], h, w] }
                }
            }
            Details::Fc { inputs, outputs, weights, bias } => {
                let features: usize = x.shape.iter().product();
                ensure!(features == *inputs, "layer {i}: fc of {inputs} inputs on {:?}", x.shape);
                let flat = if x.shape.len() == 1 {
                    x.name.clone()
                } else {
                    b.op("Flatten", &name("flatten"), &[&x.name], vec![attr_int("axis", 1)])
                };
                let wname = b.constant(&name("fc/weights"), &[*inputs, *outputs], weights);
                let mut y = b.op("MatMul", &name("fc"), &[&flat, &wname], vec![]);
                if let Some(bias) = bias {
                    let bname = b.constant(&name("fc/bias"), &[*outputs], bias);
                    y = b.op("Add", &name("fc/biased"), &[&y, &bname], vec![]);
                }
                Value { name: y, shape: vec![*outputs] }
            }
            Details::AddPrev { tag } => {
                let other = tags
                    .get(tag)
                    .with_context(|| format!("layer {i}: add_prev{tag} without a tag{tag} below"))?;
                ensure!(
                    x.shape.len() == 3 && other.shape.len() == 3,
                    "layer {i}: add_prev of {:?} and {:?}",
                    x.shape,
                    other.shape
                );
                let shape: Vec<usize> = x.shape.iter().zip(&other.shape).map(|(a, b)| *a.max(b)).collect();
                let a = pad_to(&mut b, &x, &shape, &name("add_prev/pad_input"));
                let c = pad_to(&mut b, other, &shape, &name("add_prev/pad_tagged"));
                let y = b.op("Add", &name("add_prev"), &[&a.name, &c.name], vec![]);
                Value { name: y, shape }
            }
            Details::Tag(id) => {
                tags.insert(*id, x.clone());
                x
            }
            Details::Skip(id) => {
                tags.get(id).with_context(|| format!("layer {i}: skip{id} without a tag{id} below"))?.clone()
            }
        };
    }

    // The loss layer passes the last output through: name it `facen`.
    ensure!(x.shape.len() == 1, "the network ends in {:?}, not a vector per face", x.shape);
    let batch = Dim::Symbolic("N".into());
    b.finish(
        "dlib_face_recognition_resnet_model_v1",
        (INPUT, &[batch.clone(), Dim::Fixed(3), Dim::Fixed(input.rows), Dim::Fixed(input.cols)]),
        (OUTPUT, &[batch, Dim::Fixed(x.shape[0])]),
        &x.name,
        doc,
    )
}

#[cfg(test)]
mod tests {
    use super::super::dlib::{Loss, MetricLoss, RgbInput};
    use super::*;

    #[test]
    fn the_network_type_has_dlibs_layer_counts() {
        let (_, layers, _) = face_recognition_v1();
        let count = |f: fn(&Layer) -> bool| layers.iter().filter(|l| f(l)).count();
        // 1 stem conv + 2 per residual block (3 + 4 + 3 + 3 + 1 = 14 blocks).
        assert_eq!(count(|l| matches!(l, Layer::Con { .. })), 29);
        assert_eq!(count(|l| matches!(l, Layer::Affine)), 29);
        assert_eq!(count(|l| matches!(l, Layer::AddPrev { .. })), 14);
        assert_eq!(count(|l| matches!(l, Layer::Skip(_))), 4);
        assert_eq!(layers.first(), Some(&Layer::Fc { outputs: 128, has_bias: false }));
    }

    /// A downsampling residual block whose skip path (avg_pool 2x2/2 of 8x8: 4x4, 2 channels)
    /// and block (unpadded 3x3/2 conv of 8x8: 3x3, 4 channels) differ in shape, as at dlib's
    /// 8x8 level: both are zero-padded at the end to 4 channels of 4x4 before the Add.
    #[test]
    fn add_prev_pads_mismatched_operands_at_the_end() {
        let con = |out: usize, inp: usize, stride: usize, padding: usize| Details::Con {
            weight_dims: [out, inp, 3, 3],
            weights: vec![0.5; out * inp * 9],
            bias: Some(vec![0.0; out]),
            stride: [stride, stride],
            padding: [padding, padding],
            relu: false,
        };
        let network = Network {
            loss: Loss::Metric(MetricLoss { margin: 0.04, distance_threshold: 0.6 }),
            layers: vec![
                Details::Fc { inputs: 4, outputs: 2, weights: vec![1.0; 8], bias: None },
                Details::AvgPool { size: [0, 0], stride: [1, 1], padding: [0, 0] },
                Details::AddPrev { tag: 2 },
                Details::AvgPool { size: [2, 2], stride: [2, 2], padding: [0, 0] },
                Details::Skip(1),
                Details::Tag(2),
                con(4, 2, 2, 0),
                Details::Tag(1),
                con(2, 3, 1, 1),
            ],
            input: Input::Sized(RgbInput { mean: [1.0, 2.0, 3.0], rows: 8, cols: 8 }),
        };
        let model = build_model(&network, "test").unwrap();
        let graph = model.graph.as_ref().unwrap();
        let pads = |name: &str| {
            graph.initializer.iter().find(|t| t.name == name).map(|t| t.int64_data.clone()).unwrap()
        };
        assert_eq!(pads("l002/add_prev/pad_input/pads"), [0, 0, 0, 0, 0, 2, 0, 0]);
        assert_eq!(pads("l002/add_prev/pad_tagged/pads"), [0, 0, 0, 0, 0, 0, 1, 1]);
        let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(
            ops,
            [
                "Sub",
                "Mul",
                "Conv",
                "Conv",
                "AveragePool",
                "Pad",
                "Pad",
                "Add",
                "GlobalAveragePool",
                "Flatten",
                "MatMul"
            ]
        );
        assert_eq!(graph.node.last().unwrap().output, [OUTPUT]);
    }
}
