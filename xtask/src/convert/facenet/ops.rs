//! One method per TensorFlow op family: each maps a node to ONNX, folding what it can into
//! the pending linear op before it.

use super::*;

impl<'a> Converter<'a> {
    pub(super) fn placeholder(&mut self, node: &'a NodeDef) -> Result<Entry> {
        let dtype = node.attr("dtype")?.r#type.unwrap_or(0);
        if dtype == DT_BOOL {
            // phase_train fed with nothing: FaceNet's graphs default it to inference.
            return Ok(Entry::Const(Constant { dims: vec![], values: ConstValues::Bool(vec![false]) }));
        }
        ensure!(dtype == DT_FLOAT, "placeholder of data type {dtype}");
        ensure!(self.input_hw.is_none(), "a second image input");
        let shape = node.attr("shape")?.shape.as_ref().context("placeholder without a shape")?;
        let dims: Vec<i64> = shape.dim.iter().map(|d| d.size).collect();
        ensure!(
            dims.len() == 4 && dims[3] == 3 && dims[1] > 0 && dims[2] > 0,
            "input shape {dims:?} (expected [N, H, W, 3])"
        );
        let (h, w) = (dims[1] as usize, dims[2] as usize);
        self.input_hw = Some([h, w]);
        Ok(Entry::Value(Value { name: INPUT.into(), shape: vec![3, h, w] }))
    }

    pub(super) fn conv2d(&mut self, node: &'a NodeDef) -> Result<Entry> {
        let onnx_name = node.name.as_str();
        let [x, w] = Self::inputs(node, 2)?[..] else { unreachable!() };
        let x = self.value(x)?;
        let w = self.const_of(w)?;
        let strides = node.spatial("strides")?;
        if node.attr.contains_key("dilations") {
            let d = node.attr_ints("dilations")?;
            ensure!(d.iter().all(|&v| v == 1), "dilations {d:?}");
        }
        let [kh, kw, cin, cout] = w.dims[..] else { bail!("weights of shape {:?}", w.dims) };
        ensure!(x.shape.len() == 3 && x.shape[0] == cin, "{cin}-channel weights on {:?}", x.shape);
        let (out, pads) = window(node, [x.shape[1], x.shape[2]], [kh, kw], strides)?;
        // HWIO → OIHW.
        let hwio = w.floats(onnx_name)?;
        let mut oihw = vec![0f32; hwio.len()];
        for y in 0..kh {
            for xx in 0..kw {
                for i in 0..cin {
                    for o in 0..cout {
                        oihw[((o * cin + i) * kh + y) * kw + xx] = hwio[((y * kw + xx) * cin + i) * cout + o];
                    }
                }
            }
        }
        Ok(Entry::Linear(Box::new(Linear {
            name: onnx_name.into(),
            input: x,
            weight_dims: vec![cout, cin, kh, kw],
            weights: oihw,
            bias: vec![0.0; cout],
            kind: LinearKind::Conv { strides, pads },
            shape: vec![cout, out[0], out[1]],
        })))
    }

    pub(super) fn matmul(&mut self, node: &'a NodeDef) -> Result<Entry> {
        let onnx_name = node.name.as_str();
        let [a, b] = Self::inputs(node, 2)?[..] else { unreachable!() };
        for t in ["transpose_a", "transpose_b"] {
            ensure!(node.attr.get(t).and_then(|v| v.b) != Some(true), "{t} is set");
        }
        let a = self.value(a)?;
        let b = self.const_of(b)?;
        let [k, m] = b.dims[..] else { bail!("weights of shape {:?}", b.dims) };
        ensure!(a.shape == [k], "[{k}, {m}] weights on {:?}", a.shape);
        Ok(Entry::Linear(Box::new(Linear {
            name: onnx_name.into(),
            input: a,
            weight_dims: vec![k, m],
            weights: b.floats(onnx_name)?.to_vec(),
            bias: vec![0.0; m],
            kind: LinearKind::MatMul,
            shape: vec![m],
        })))
    }

    pub(super) fn fused_batch_norm(&mut self, node: &'a NodeDef) -> Result<Entry> {
        let onnx_name = node.name.as_str();
        let inputs = Self::inputs(node, 5)?;
        if let Some(t) = node.attr.get("is_training").and_then(|v| v.b) {
            ensure!(!t, "a batch norm in training mode");
        }
        if node.attr.contains_key("data_format") {
            let format = node.attr_str("data_format")?;
            ensure!(format == "NHWC", "data_format {format}");
        }
        let epsilon = node.attr.get("epsilon").and_then(|v| v.f).unwrap_or(1e-3);
        let mut params = Vec::with_capacity(4);
        for p in &inputs[1..] {
            params.push(self.const_of(p)?.floats(p)?.to_vec());
        }
        let (gamma, beta, mean, var) = (&params[0], &params[1], &params[2], &params[3]);
        let c = gamma.len();
        ensure!(params.iter().all(|p| p.len() == c), "parameters of different lengths");
        let scale: Vec<f32> = (0..c).map(|i| gamma[i] / (var[i] + epsilon).sqrt()).collect();
        let shift: Vec<f32> = (0..c).map(|i| beta[i] - mean[i] * scale[i]).collect();
        let l = self.foldable(inputs[0])?.context(
            "a batch norm that does not follow a convolution or product used only by it \
             (refacen folds every batch norm into weights)",
        )?;
        ensure!(l.outputs() == c, "{c} parameters for {} channels", l.outputs());
        Ok(Entry::Linear(Box::new(l.with_affine(&scale, &shift, onnx_name))))
    }

    pub(super) fn pool(&mut self, node: &'a NodeDef) -> Result<Entry> {
        let onnx_name = node.name.as_str();
        let [x] = Self::inputs(node, 1)?[..] else { unreachable!() };
        let x = self.value(x)?;
        ensure!(x.shape.len() == 3, "pooling on {:?}", x.shape);
        let kernel = node.spatial("ksize")?;
        let strides = node.spatial("strides")?;
        let (out, pads) = window(node, [x.shape[1], x.shape[2]], kernel, strides)?;
        let mut attrs = window_attrs(kernel, strides, pads);
        let op = if node.op == "MaxPool" {
            "MaxPool"
        } else {
            // TensorFlow averages over the window's cells inside the input (said only
            // when there is padding: some ONNX readers refuse the attribute).
            if pads.iter().any(|&p| p > 0) {
                attrs.push(attr_int("count_include_pad", 0));
            }
            "AveragePool"
        };
        let name = self.graph.op(op, onnx_name, &[&x.name], attrs);
        Ok(Entry::Value(Value { name, shape: vec![x.shape[0], out[0], out[1]] }))
    }

    pub(super) fn concat(&mut self, node: &'a NodeDef) -> Result<Entry> {
        let onnx_name = node.name.as_str();
        let inputs: Vec<&str> = node.data_inputs().collect();
        let (axis, parts) = inputs.split_last().context("no inputs")?;
        let axis = self.const_of(axis)?.ints(axis)?.first().copied().context("an empty axis")?;
        let mut values = Vec::with_capacity(parts.len());
        for p in parts {
            values.push(self.value(p)?);
        }
        let first = values.first().context("nothing to concatenate")?.clone();
        ensure!(first.shape.len() == 3, "concatenation of {:?}", first.shape);
        // NHWC axis → NCHW axis.
        let axis = match axis.rem_euclid(4) {
            3 => 1,
            1 => 2,
            2 => 3,
            _ => bail!("concatenation along the batch"),
        };
        let mut shape = first.shape.clone();
        shape[axis - 1] = 0;
        for v in &values {
            for d in 0..3 {
                ensure!(d == axis - 1 || v.shape[d] == first.shape[d], "parts of shapes {:?}", v.shape);
            }
            shape[axis - 1] += v.shape[axis - 1];
        }
        let names: Vec<&str> = values.iter().map(|v| v.name.as_str()).collect();
        let name = self.graph.op("Concat", onnx_name, &names, vec![attr_int("axis", axis as i64)]);
        Ok(Entry::Value(Value { name, shape }))
    }

    pub(super) fn reshape(&mut self, node: &'a NodeDef) -> Result<Entry> {
        let onnx_name = node.name.as_str();
        let [x, shape] = Self::inputs(node, 2)?[..] else { unreachable!() };
        let target = self.const_of(shape)?.ints(shape)?.to_vec();
        let features_of = |shape: &[usize]| shape.iter().product::<usize>();
        Ok(match self.entry(x)? {
            // The batch norm of FaceNet's bottleneck views [N, 512] as [N, 1, 1, 512]
            // and back: keep the product pending through both reshapes.
            Entry::Linear(l) if self.single_use(x) && l.shape.len() == 1 => {
                let c = l.shape[0];
                ensure!(
                    target.len() >= 2
                        && target[..target.len() - 1].iter().skip(1).all(|&d| d == 1)
                        && (target[target.len() - 1] == c as i64 || target[target.len() - 1] == -1),
                    "a reshape of [N, {c}] to {target:?}"
                );
                Entry::Linear(l)
            }
            _ => {
                let v = self.value(x)?;
                let features = features_of(&v.shape);
                ensure!(
                    target.len() == 2 && (target[1] == -1 || target[1] == features as i64),
                    "a reshape of {:?} to {target:?} (only a flatten to [batch, features] is supported)",
                    v.shape
                );
                // NCHW and NHWC flatten alike only when the map is 1x1.
                ensure!(v.shape.iter().skip(1).all(|&d| d == 1), "a flatten of a {:?} map", v.shape);
                let name = self.graph.op("Flatten", onnx_name, &[&v.name], vec![attr_int("axis", 1)]);
                Entry::Value(Value { name, shape: vec![features] })
            }
        })
    }

    /// Whether one of a binary node's two inputs is a float constant and the other is not.
    pub(super) fn has_const_vector_operand(&mut self, node: &'a NodeDef) -> Result<bool> {
        let inputs: Vec<&str> = node.data_inputs().collect();
        if inputs.len() != 2 {
            return Ok(false);
        }
        let a = matches!(self.entry(inputs[0])?, Entry::Const(_));
        let b = matches!(self.entry(inputs[1])?, Entry::Const(_));
        Ok(a != b)
    }

    pub(super) fn value_and_constant(&mut self, node: &'a NodeDef) -> Result<(&'a str, Constant)> {
        let [a, b] = Self::inputs(node, 2)?[..] else { unreachable!() };
        match self.entry(a)? {
            Entry::Const(c) => Ok((b, c)),
            _ => Ok((a, self.const_of(b)?)),
        }
    }

    /// A per-channel constant broadcastable to `x` (`[C, 1, 1]` on maps, `[C]` on vectors).
    pub(super) fn channel_constant(&mut self, name: &str, x: &Value, values: &[f32]) -> Result<String> {
        let c = x.shape[0];
        ensure!(values.len() == c || values.len() == 1, "{} values for {c} channels", values.len());
        let dims: Vec<usize> = if x.shape.len() == 3 { vec![values.len(), 1, 1] } else { vec![values.len()] };
        Ok(self.graph.constant(name, &dims, values))
    }
}
