//! A convolution or matrix product held back until what follows it has been folded in.

use super::Value;

/// A convolution or matrix product not yet written, so that what follows can fold into it.
#[derive(Clone, Debug)]
pub(super) struct Linear {
    /// The node's name (its output is named after it).
    pub(super) name: String,
    pub(super) input: Value,
    /// Conv: `[out, in, kh, kw]` (OIHW); MatMul: `[in, out]`.
    pub(super) weight_dims: Vec<usize>,
    pub(super) weights: Vec<f32>,
    /// One per output channel.
    pub(super) bias: Vec<f32>,
    pub(super) kind: LinearKind,
    /// The output's shape without the batch dimension.
    pub(super) shape: Vec<usize>,
}

#[derive(Clone, Debug)]
pub(super) enum LinearKind {
    Conv { strides: [usize; 2], pads: [usize; 4] },
    MatMul,
}

impl Linear {
    pub(super) fn outputs(&self) -> usize {
        match self.kind {
            LinearKind::Conv { .. } => self.weight_dims[0],
            LinearKind::MatMul => self.weight_dims[1],
        }
    }

    /// This layer with the per-channel affine of TensorFlow's node `name` folded in (see
    /// [`fold_affine`](Self::fold_affine)): it now makes that node's output.
    pub(super) fn with_affine(mut self, scale: &[f32], shift: &[f32], name: &str) -> Self {
        self.fold_affine(scale, shift);
        self.name = name.into();
        self
    }

    /// Multiplies output channel `c` by `scale[c]` and then adds `shift[c]`.
    fn fold_affine(&mut self, scale: &[f32], shift: &[f32]) {
        let outputs = self.outputs();
        match self.kind {
            LinearKind::Conv { .. } => {
                let per_output = self.weights.len() / outputs;
                for (c, w) in self.weights.chunks_exact_mut(per_output).enumerate() {
                    w.iter_mut().for_each(|v| *v *= scale[c]);
                }
            }
            LinearKind::MatMul => {
                for row in self.weights.chunks_exact_mut(outputs) {
                    row.iter_mut().zip(scale).for_each(|(v, s)| *v *= s);
                }
            }
        }
        for (c, b) in self.bias.iter_mut().enumerate() {
            *b = *b * scale[c] + shift[c];
        }
    }
}
