//! Reading networks serialized by dlib's DNN module (`dlib::serialize(net)`, `.dat` files).
//!
//! dlib's format is not self-describing: a network is written by its C++ type, outermost
//! layer first, and the reader must know that type. [`read_network`] takes it as a list of
//! [`Layer`]s (outermost first) and checks every layer's version tag and hyperparameters
//! against it. The encoding (from dlib/serialize.h, dlib/float_details.h,
//! dlib/cuda/tensor.h and dlib/dnn/{core,layers,input,loss}.h):
//!
//! - integers of every C++ type: a control byte (bit 7: negative; low 4 bits: byte count n,
//!   1..8) then n bytes of magnitude, little-endian;
//! - `float`/`double` scalars: `float_details`, a mantissa (int64) and an exponent (int16),
//!   both as integers above; the value is mantissa·2^exponent, exponents 32000/32001/32002
//!   meaning +inf/-inf/NaN (dlib's even older ASCII form is refused);
//! - `bool`: one ASCII byte, `'0'` or `'1'`;
//! - strings (layer version tags such as `"con_6"`): length as integer, then the bytes;
//! - `resizable_tensor`: version 2, num_samples, k, nr, nc (integers), then the values as
//!   little-endian IEEE float32; `alias_tensor`: version 1 and the four dimensions only.
//!
//! Layer nesting: `add_loss_layer` writes its version, its loss details, then the subnetwork;
//! `add_layer` writes its version, then the whole subnetwork, then its layer details and
//! bookkeeping (flags, gradient tensors); `add_tag_layer` and `add_skip_layer` write a version
//! and the subnetwork. The file therefore holds all layer versions outermost first, then the
//! input layer, then the layer details innermost first.

use anyhow::{Context, Result, bail, ensure};

mod reader;

pub(super) use reader::Reader;

/// A layer of the network type, as `read_network` expects it.
#[derive(Clone, Debug, PartialEq)]
pub enum Layer {
    /// `con_<filters, rows, cols, stride_y, stride_x>` (dlib's default padding).
    Con {
        filters: usize,
        size: [usize; 2],
        stride: [usize; 2],
    },
    /// `affine_` (also accepts a `bn_con` batch norm, converted as dlib converts it).
    Affine,
    Relu,
    /// `max_pool_<rows, cols, stride_y, stride_x>`; rows = cols = 0 pools everything.
    MaxPool {
        size: [usize; 2],
        stride: [usize; 2],
    },
    /// `avg_pool_<rows, cols, stride_y, stride_x>`; rows = cols = 0 pools everything.
    AvgPool {
        size: [usize; 2],
        stride: [usize; 2],
    },
    /// `fc_<outputs, FC_NO_BIAS>` (`has_bias: false`) or `fc_<outputs, FC_HAS_BIAS>`.
    Fc {
        outputs: usize,
        has_bias: bool,
    },
    /// `add_prev_<tagN>`: the input plus the output of the nearest `tagN` below.
    AddPrev {
        tag: u32,
    },
    /// `add_tag_layer<N>`: marks its input.
    Tag(u32),
    /// `add_skip_layer<tagN>`: outputs the nearest `tagN` below, ignoring its input.
    Skip(u32),
}

/// The input layer the network type ends with.
#[derive(Clone, Debug, PartialEq)]
pub enum InputSpec {
    /// `input_rgb_image_sized<rows, cols>`.
    RgbImageSized { rows: usize, cols: usize },
    /// `input_rgb_image_pyramid<pyramid_down<N>>` (the pyramid type is not in the file).
    RgbImagePyramid,
}

/// The loss layer the network type begins with.
#[derive(Clone, Debug, PartialEq)]
pub enum LossSpec {
    /// `loss_metric_`.
    Metric,
    /// `loss_mmod_`.
    Mmod,
}

/// What was read for a layer, in the order of [`Network::layers`].
#[derive(Clone, Debug, PartialEq)]
pub enum Details {
    Con {
        /// `[filters, channels, rows, cols]`, the ONNX Conv weight layout.
        weight_dims: [usize; 4],
        weights: Vec<f32>,
        bias: Option<Vec<f32>>,
        stride: [usize; 2],
        /// `[padding_y, padding_x]`, on both sides.
        padding: [usize; 2],
        /// dlib ≥ 19.22 can fuse a relu into `con_`.
        relu: bool,
    },
    /// Per-channel `x·gamma + beta` (conv mode).
    Affine {
        gamma: Vec<f32>,
        beta: Vec<f32>,
    },
    /// An identity (`affine_` or `relu_` with `disabled` set).
    Disabled,
    Relu,
    MaxPool {
        size: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    },
    AvgPool {
        size: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    },
    Fc {
        inputs: usize,
        outputs: usize,
        /// `[inputs, outputs]`, row-major: output = input · weights.
        weights: Vec<f32>,
        bias: Option<Vec<f32>>,
    },
    AddPrev {
        tag: u32,
    },
    Tag(u32),
    Skip(u32),
}

/// The input layer as read.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    Sized(RgbInput),
    Pyramid(PyramidInput),
}

/// `input_rgb_image_sized`: the network input is `(pixel - mean[c]) / 256`, planar RGB.
#[derive(Clone, Debug, PartialEq)]
pub struct RgbInput {
    pub mean: [f32; 3],
    pub rows: usize,
    pub cols: usize,
}

/// `input_rgb_image_pyramid`: `(pixel - mean[c]) / 256`, planar RGB, tiled with its pyramid
/// levels into one image, `padding` pixels between levels and `outer_padding` around them.
#[derive(Clone, Debug, PartialEq)]
pub struct PyramidInput {
    pub mean: [f32; 3],
    pub padding: usize,
    pub outer_padding: usize,
}

/// The loss layer as read.
#[derive(Clone, Debug, PartialEq)]
pub enum Loss {
    Metric(MetricLoss),
    Mmod(MmodLoss),
}

#[derive(Clone, Debug, PartialEq)]
pub struct MetricLoss {
    pub margin: f32,
    pub distance_threshold: f32,
}

/// `loss_mmod_`'s options that decoding needs (dlib's `mmod_options`).
#[derive(Clone, Debug, PartialEq)]
pub struct MmodLoss {
    /// `(width, height, label)` of each detector window, one output channel each.
    pub windows: Vec<(usize, usize, String)>,
    /// Non-max suppression: two boxes overlap when IoU > `nms_iou` or either covers more than
    /// `nms_covered` of the other.
    pub nms_iou: f64,
    pub nms_covered: f64,
    pub bounding_box_regression: bool,
}

/// A network as read: the loss, the layers outermost first, the input.
#[derive(Clone, Debug)]
pub struct Network {
    pub loss: Loss,
    pub layers: Vec<Details>,
    pub input: Input,
}

/// Reads a network of type `loss<layers...<input>>` from `bytes`, checking it against that
/// type; the whole of `bytes` must be the network.
pub fn read_network(bytes: &[u8], loss: &LossSpec, layers: &[Layer], input: &InputSpec) -> Result<Network> {
    let mut r = Reader::new(bytes);
    let network = read_all(&mut r, loss, layers, input).with_context(|| {
        format!("malformed dlib network at byte offset {} of {}", r.position(), bytes.len())
    })?;
    ensure!(
        r.position() == bytes.len(),
        "{} bytes remain after the network: the file holds another network type",
        bytes.len() - r.position()
    );
    Ok(network)
}

fn read_all(r: &mut Reader, loss: &LossSpec, layers: &[Layer], input: &InputSpec) -> Result<Network> {
    let version = r.int().context("add_loss_layer version")?;
    ensure!(version == 1, "add_loss_layer version {version}, expected 1");
    let loss = match loss {
        LossSpec::Metric => Loss::Metric(read_metric_loss(r)?),
        LossSpec::Mmod => Loss::Mmod(read_mmod_loss(r)?),
    };

    // Versions, outermost first. The add_layer right above the input layer is another C++
    // class with its own format (versions 2 and 3).
    let mut versions = Vec::with_capacity(layers.len());
    for (i, layer) in layers.iter().enumerate() {
        let above_input = i + 1 == layers.len();
        let version = r.int().with_context(|| format!("version of layer {i} ({layer:?})"))?;
        let ok = match layer {
            Layer::Tag(_) | Layer::Skip(_) => {
                ensure!(!above_input, "a tag or skip layer right above the input is not supported");
                version == 1
            }
            _ if above_input => (2..=3).contains(&version),
            _ => (1..=2).contains(&version),
        };
        ensure!(ok, "layer {i} ({layer:?}): unexpected add_layer/tag/skip version {version}");
        versions.push(version);
    }
    ensure!(!layers.is_empty(), "a network needs at least one layer above its input");

    let input = match input {
        InputSpec::RgbImageSized { rows, cols } => Input::Sized(read_rgb_input(r, *rows, *cols)?),
        InputSpec::RgbImagePyramid => Input::Pyramid(read_pyramid_input(r)?),
    };

    // Details, innermost first.
    let mut details = vec![Details::Relu; layers.len()];
    for i in (0..layers.len()).rev() {
        let layer = &layers[i];
        let context = || format!("layer {i} from the top ({layer:?})");
        details[i] = match layer {
            Layer::Tag(id) => Details::Tag(*id),
            Layer::Skip(id) => Details::Skip(*id),
            _ => {
                let d = read_details(r, layer).with_context(context)?;
                read_add_layer_tail(r, versions[i], i + 1 == layers.len()).with_context(context)?;
                d
            }
        };
    }
    Ok(Network { loss, layers: details, input })
}

/// The bookkeeping `add_layer` writes after its layer's details (nothing of it is needed for
/// inference, but it must be read past).
fn read_add_layer_tail(r: &mut Reader, version: i64, above_input: bool) -> Result<()> {
    let _this_layer_setup_called = r.bool()?;
    let _gradient_input_is_stale = r.bool()?;
    let _get_output_and_gradient_input_disabled = r.bool()?;
    let _x_grad = r.tensor().context("x_grad")?;
    let _cached_output = r.tensor().context("cached_output")?;
    if above_input {
        let _grad_final = r.tensor().context("grad_final")?;
        if version >= 3 {
            let _sample_expansion_factor = r.int()?;
        }
    } else if version == 2 {
        let _params_grad = r.tensor().context("params_grad")?;
    }
    Ok(())
}

fn read_metric_loss(r: &mut Reader) -> Result<MetricLoss> {
    let tag = r.string()?;
    match tag.as_str() {
        // Older files: the values were hard-coded.
        "loss_metric_" => Ok(MetricLoss { margin: 0.1, distance_threshold: 0.75 }),
        "loss_metric_2" => Ok(MetricLoss { margin: r.f32()?, distance_threshold: r.f32()? }),
        _ => bail!("expected a loss_metric_ loss layer, found `{tag}`"),
    }
}

fn read_mmod_loss(r: &mut Reader) -> Result<MmodLoss> {
    let tag = r.string()?;
    ensure!(tag == "loss_mmod_", "expected a loss_mmod_ loss layer, found `{tag}`");
    let version = r.int().context("mmod_options version")?;
    ensure!((1..=4).contains(&version), "mmod_options version {version}, expected 1 to 4");
    let windows = if version == 1 {
        vec![(r.usize()?, r.usize()?, String::new())]
    } else {
        let count = r.usize()?;
        ensure!((1..=1000).contains(&count), "implausible detector window count {count}");
        let mut windows = Vec::with_capacity(count);
        for _ in 0..count {
            let v = r.int()?;
            ensure!(v == 1 || v == 2, "detector window version {v}, expected 1 or 2");
            let (width, height) = (r.usize()?, r.usize()?);
            let label = if v == 2 { r.string()? } else { String::new() };
            windows.push((width, height, label));
        }
        windows
    };
    let _loss_per_false_alarm = r.f64()?;
    let _loss_per_missed_target = r.f64()?;
    let _truth_match_iou_threshold = r.f64()?;
    let nms_iou = r.f64()?;
    let nms_covered = r.f64()?;
    let _ignore_iou = r.f64()?;
    let _ignore_covered = r.f64()?;
    if version >= 3 {
        let _assume_image_pyramid = r.byte()?;
    }
    let bounding_box_regression = if version >= 4 {
        let bbr = r.bool()?;
        let _bbr_lambda = r.f64()?;
        bbr
    } else {
        false
    };
    Ok(MmodLoss { windows, nms_iou, nms_covered, bounding_box_regression })
}

fn read_pyramid_input(r: &mut Reader) -> Result<PyramidInput> {
    let tag = r.string()?;
    ensure!(
        tag == "input_rgb_image_pyramid" || tag == "input_rgb_image_pyramid2",
        "expected input layer input_rgb_image_pyramid, found `{tag}`"
    );
    let mean = [r.f32()?, r.f32()?, r.f32()?];
    // The first version had the paddings hard-coded.
    let (padding, outer_padding) =
        if tag == "input_rgb_image_pyramid2" { (r.usize()?, r.usize()?) } else { (10, 11) };
    Ok(PyramidInput { mean, padding, outer_padding })
}

fn read_rgb_input(r: &mut Reader, rows: usize, cols: usize) -> Result<RgbInput> {
    let tag = r.string()?;
    ensure!(tag == "input_rgb_image_sized", "expected input layer input_rgb_image_sized, found `{tag}`");
    let mean = [r.f32()?, r.f32()?, r.f32()?];
    let (nr, nc) = (r.usize()?, r.usize()?);
    ensure!((nr, nc) == (rows, cols), "input is {nr}x{nc}, the network type says {rows}x{cols}");
    Ok(RgbInput { mean, rows, cols })
}

fn read_details(r: &mut Reader, layer: &Layer) -> Result<Details> {
    let tag = r.string().context("layer version tag")?;
    let expect = |names: &[&str]| {
        ensure!(names.contains(&tag.as_str()), "expected layer {}, found `{tag}`", names.join(" or "));
        Ok(())
    };
    match layer {
        Layer::Con { filters, size, stride } => {
            expect(&["con_4", "con_5", "con_6"])?;
            read_con(r, &tag, *filters, *size, *stride)
        }
        Layer::Affine => {
            expect(&["affine_", "affine_2", "bn_con2"])?;
            if tag == "bn_con2" { read_bn_con_as_affine(r) } else { read_affine(r, &tag) }
        }
        Layer::Relu => {
            expect(&["relu_", "relu_2"])?;
            let disabled = tag == "relu_2" && r.bool()?;
            Ok(if disabled { Details::Disabled } else { Details::Relu })
        }
        Layer::MaxPool { size, stride } | Layer::AvgPool { size, stride } => {
            let is_max = matches!(layer, Layer::MaxPool { .. });
            expect(&[if is_max { "max_pool_2" } else { "avg_pool_2" }])?;
            let padding = read_window(r, "pool", *size, *stride)?;
            let (size, stride) = (*size, *stride);
            Ok(if is_max {
                Details::MaxPool { size, stride, padding }
            } else {
                Details::AvgPool { size, stride, padding }
            })
        }
        Layer::Fc { outputs, has_bias } => {
            expect(&["fc_2", "fc_3"])?;
            read_fc(r, &tag, *outputs, *has_bias)
        }
        Layer::AddPrev { tag: id } => {
            expect(&["add_prev_"])?;
            Ok(Details::AddPrev { tag: *id })
        }
        Layer::Tag(_) | Layer::Skip(_) => unreachable!("tags and skips have no details"),
    }
}

/// Reads a window as dlib writes it (rows, columns, strides, padding), checks it against the
/// network type and returns its padding, which must be dlib's default: the C++ type would reject
/// any other.
fn read_window(r: &mut Reader, layer: &str, size: [usize; 2], stride: [usize; 2]) -> Result<[usize; 2]> {
    let (nr, nc, sy, sx) = (r.usize()?, r.usize()?, r.usize()?, r.usize()?);
    let padding = [r.usize()?, r.usize()?];
    ensure!(
        [nr, nc] == size && [sy, sx] == stride,
        "{layer} {nr}x{nc} stride {sy}x{sx}, expected {size:?} {stride:?}"
    );
    let default = |k: usize, s: usize| if s != 1 { 0 } else { k / 2 };
    ensure!(
        padding == [default(nr, sy), default(nc, sx)],
        "{layer} padding {}x{} is not dlib's default for its type",
        padding[0],
        padding[1]
    );
    Ok(padding)
}

/// What con_, fc_ and bn_ serialize after their tensors: `learning_rate_multiplier`,
/// `weight_decay_multiplier`, `bias_learning_rate_multiplier` and
/// `bias_weight_decay_multiplier`, four doubles that only training reads.
fn skip_training_multipliers(r: &mut Reader) -> Result<()> {
    for _ in 0..4 {
        r.f64()?;
    }
    Ok(())
}

fn read_con(
    r: &mut Reader,
    version: &str,
    filters: usize,
    size: [usize; 2],
    stride: [usize; 2],
) -> Result<Details> {
    let params = r.tensor().context("con_ params")?;
    let num_filters = r.usize()?;
    ensure!(num_filters == filters, "con has {num_filters} filters, expected {filters}");
    let padding = read_window(r, "con", size, stride)?;
    let [nr, nc] = size;
    let filter_dims = r.alias_tensor().context("con_ filters")?;
    let bias_dims = r.alias_tensor().context("con_ biases")?;
    skip_training_multipliers(r)?;
    let use_bias = if version == "con_5" || version == "con_6" { r.bool()? } else { true };
    let relu = version == "con_6" && r.bool()?;

    let [n, k, fr, fc] = filter_dims;
    ensure!(
        n == filters && fr == nr && fc == nc,
        "con filters tensor is {filter_dims:?}, expected [{filters}, k, {nr}, {nc}]"
    );
    let weight_count = n * k * fr * fc;
    let bias_count = if use_bias { filters } else { 0 };
    ensure!(
        params.len() == weight_count + bias_count,
        "con params hold {} values, expected {weight_count} weights and {bias_count} biases",
        params.len()
    );
    let bias = if use_bias {
        ensure!(
            bias_dims.iter().product::<usize>() == filters,
            "con bias tensor is {bias_dims:?}, expected {filters} values"
        );
        Some(params[weight_count..].to_vec())
    } else {
        None
    };
    let mut weights = params;
    weights.truncate(weight_count);
    Ok(Details::Con { weight_dims: filter_dims, weights, bias, stride, padding, relu })
}

/// dlib's layer_mode: CONV_MODE = 0 (one gamma per channel), FC_MODE = 1 (one per value).
const CONV_MODE: i64 = 0;

fn read_affine(r: &mut Reader, version: &str) -> Result<Details> {
    let params = r.tensor().context("affine_ params")?;
    let gamma_dims = r.alias_tensor()?;
    let beta_dims = r.alias_tensor()?;
    let mode = r.int()?;
    let disabled = version == "affine_2" && r.bool()?;
    if disabled {
        return Ok(Details::Disabled);
    }
    ensure!(mode == CONV_MODE, "affine_ in FC mode (mode {mode}) is not supported");
    let (g, b) = (gamma_dims.iter().product::<usize>(), beta_dims.iter().product::<usize>());
    ensure!(
        g == b && params.len() == g + b,
        "affine_ gamma {gamma_dims:?}, beta {beta_dims:?}, {} params",
        params.len()
    );
    Ok(Details::Affine { gamma: params[..g].to_vec(), beta: params[g..].to_vec() })
}

/// `bn_<CONV_MODE>` as `affine_` converts it on deserialization: gamma / sqrt(var + eps)
/// and beta - gamma' · mean, in float32 like dlib.
fn read_bn_con_as_affine(r: &mut Reader) -> Result<Details> {
    let params = r.tensor().context("bn_ params")?;
    let gamma_dims = r.alias_tensor()?;
    let _beta_dims = r.alias_tensor()?;
    let _means = r.tensor()?;
    let _invstds = r.tensor()?;
    let running_means = r.tensor()?;
    let running_variances = r.tensor()?;
    let _num_updates = r.int()?;
    let _running_stats_window_size = r.int()?;
    skip_training_multipliers(r)?;
    let eps = r.f64()?;
    let c = gamma_dims.iter().product::<usize>();
    ensure!(
        params.len() == 2 * c && running_means.len() == c && running_variances.len() == c,
        "bn_con sizes do not match: {} params, {c} channels",
        params.len()
    );
    // dlib adds the (double) eps to a float matrix expression: the scalar becomes a float.
    let eps = eps as f32;
    let gamma: Vec<f32> = (0..c).map(|i| params[i] / (running_variances[i] + eps).sqrt()).collect();
    let beta: Vec<f32> = (0..c).map(|i| params[c + i] - gamma[i] * running_means[i]).collect();
    Ok(Details::Affine { gamma, beta })
}

/// dlib's fc_bias_mode: FC_HAS_BIAS = 0, FC_NO_BIAS = 1.
fn read_fc(r: &mut Reader, version: &str, outputs: usize, has_bias: bool) -> Result<Details> {
    let num_outputs = r.usize()?;
    let num_inputs = r.usize()?;
    let params = r.tensor().context("fc_ params")?;
    let weight_dims = r.alias_tensor()?;
    let _bias_dims = r.alias_tensor()?;
    let bias_mode = r.int()?;
    skip_training_multipliers(r)?;
    let use_bias = if version == "fc_3" { r.bool()? } else { true };

    ensure!(num_outputs == outputs, "fc_ has {num_outputs} outputs, expected {outputs}");
    ensure!(
        bias_mode == if has_bias { 0 } else { 1 },
        "fc_ bias mode {bias_mode} differs from the network type"
    );
    let with_bias = has_bias && use_bias;
    let weight_count = num_inputs * num_outputs;
    ensure!(
        weight_dims.iter().product::<usize>() == weight_count,
        "fc_ weights tensor {weight_dims:?} is not {num_inputs}x{num_outputs}"
    );
    let expected = weight_count + if with_bias { num_outputs } else { 0 };
    ensure!(params.len() == expected, "fc_ params hold {} values, expected {expected}", params.len());
    let bias = with_bias.then(|| params[weight_count..].to_vec());
    let mut weights = params;
    weights.truncate(weight_count);
    Ok(Details::Fc { inputs: num_inputs, outputs: num_outputs, weights, bias })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(bytes: &[u8]) -> Reader<'_> {
        Reader::new(bytes)
    }

    #[test]
    fn integers() {
        assert_eq!(reader(&[0x01, 0x05]).int().unwrap(), 5);
        assert_eq!(reader(&[0x81, 0x05]).int().unwrap(), -5);
        assert_eq!(reader(&[0x02, 0x34, 0x12]).int().unwrap(), 0x1234);
        assert!(reader(&[0x00]).int().is_err());
        assert!(reader(&[0x02, 0x01]).int().is_err());
    }

    #[test]
    fn floats() {
        // 0.5 as dlib writes a float: frexp gives 0.5·2^0, mantissa 0.5·2^24 = 0x800000, exponent
        // -24, then whole zero low bytes shifted off: mantissa 0x80, exponent -8.
        assert_eq!(reader(&[0x01, 0x80, 0x81, 0x08]).f64().unwrap(), 0.5);
        // -3: mantissa -0xC0, exponent -6.
        assert_eq!(reader(&[0x81, 0xC0, 0x81, 0x06]).f64().unwrap(), -3.0);
        assert!(reader(&[0x01, 0x00, 0x02, 0x00, 0x7d]).f64().unwrap().is_infinite());
        assert!(reader(b"0.5 ").f64().is_err());
    }

    #[test]
    fn strings_bools_tensors() {
        let mut r = reader(b"\x01\x05con_6");
        assert_eq!(r.string().unwrap(), "con_6");
        assert!(reader(b"1").bool().unwrap());
        assert!(reader(b"x").bool().is_err());
        let mut t = vec![0x01, 0x02, 0x01, 0x01, 0x01, 0x02, 0x01, 0x01, 0x01, 0x01];
        t.extend(1.5f32.to_le_bytes());
        t.extend((-2f32).to_le_bytes());
        assert_eq!(reader(&t).tensor().unwrap(), vec![1.5, -2.0]);
    }
}
