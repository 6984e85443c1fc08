//! Gemm and MatMul on the `gemm` crate's SGEMM, and Gemm with constant weights on the conv
//! kernels ([`ConstantB`]).

use super::conv::{self, PackedConv};
use crate::ir::{Activation, Conv, Gemm, Padding, Window};
use crate::spare::Spare;
use crate::{Deadline, NnError, Tensor, element_count, shape, zeroed_values};

/// Below this many multiply-adds a single thread is faster than waking the pool.
const PARALLEL_FLOPS: usize = 1 << 18;

/// Most multiply-adds between two looks at the deadline (~0.1 s of one core's work at most).
const MULADDS_PER_DEADLINE_CHECK: usize = 1 << 31;

/// dst[m,n] (row stride n) = beta·dst + lhs[m,k]·rhs[k,n], arbitrary (non-negative) strides,
/// in blocks of rows so that a huge product stops soon after `deadline`.
#[allow(clippy::too_many_arguments)]
fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    accumulate: bool,
    lhs: (&[f32], isize, isize),
    rhs: (&[f32], isize, isize),
    scale: f32,
    deadline: &Deadline,
) -> Result<(), NnError> {
    debug_assert!(dst.len() >= m * n);
    let rows_per_block = (MULADDS_PER_DEADLINE_CHECK / (n * k).max(1)).max(1);
    let mut first = 0;
    while first < m {
        deadline.check()?;
        let rows = rows_per_block.min(m - first);
        let parallelism = if rows * n * k >= PARALLEL_FLOPS {
            gemm::Parallelism::Rayon(0)
        } else {
            gemm::Parallelism::None
        };
        let lhs_block = &lhs.0[first * lhs.1 as usize..];
        // SAFETY: callers pass slices holding the whole matrices under the given (row, column)
        // strides, so rows [first, first + rows) of lhs and of dst lie inside them; dst is
        // exclusively borrowed.
        unsafe {
            gemm::gemm(
                rows,
                n,
                k,
                dst[first * n..].as_mut_ptr(),
                1,
                n as isize,
                accumulate,
                lhs_block.as_ptr(),
                lhs.2,
                lhs.1,
                rhs.0.as_ptr(),
                rhs.2,
                rhs.1,
                1.0,
                scale,
                false,
                false,
                false,
                parallelism,
            );
        }
        first += rows;
    }
    Ok(())
}

/// ONNX Gemm: alpha·op(A)·op(B) + beta·C, then the fused activation.
pub fn gemm_op(
    g: &Gemm,
    a: &Tensor,
    b: &Tensor,
    c: Option<&Tensor>,
    out_shape: &[usize],
    deadline: &Deadline,
) -> Result<Tensor, NnError> {
    let (m, n) = (out_shape[0], out_shape[1]);
    let k = if g.trans_a { a.shape()[0] } else { a.shape()[1] };
    let mut out = Tensor::zeros(vec![m, n])?;
    let accumulate = match c {
        Some(c) if g.beta != 0.0 => {
            fill_broadcast(out.data_mut(), c, m, n, g.beta)?;
            true
        }
        _ => false,
    };
    let (a_rs, a_cs) = if g.trans_a { (1, m as isize) } else { (k as isize, 1) };
    let (b_rs, b_cs) = if g.trans_b { (1, k as isize) } else { (n as isize, 1) };
    sgemm(
        m,
        n,
        k,
        out.data_mut(),
        accumulate,
        (a.data(), a_rs, a_cs),
        (b.data(), b_rs, b_cs),
        g.alpha,
        deadline,
    )?;
    if g.activation != Activation::None {
        for row in out.data_mut().chunks_mut(n) {
            for (j, v) in row.iter_mut().enumerate() {
                *v = g.activation.apply(*v, j);
            }
        }
    }
    Ok(out)
}

/// The fewest columns (output channels) [`ConstantB`] runs: one vector of them.
const MIN_COLUMNS: usize = 16;
/// The fewest weights [`ConstantB`] runs (2 MiB, past L2), where packing them per call costs
/// most. O-Net's (1152 x 256, 1.2 MB) over 13 rows ran faster here than on SGEMM (0.06 ms
/// against 0.14-0.18; O-Net alone at 0.59-0.67 of onnxruntime's time, 0.61-0.94 without), yet
/// with it `scripts/bench-detect`'s sandbox share was the higher in all four pairs run in ABBA
/// order (6.6-7.3% against 4.4-5.5%; 2-core VM, 2026-12-06), the totals drifting too much to
/// say which side moved. Why is not known: O-Net is left to SGEMM.
const MIN_WEIGHTS: usize = 512 * 1024;
/// The most rows [`ConstantB`] runs, plus one: at 32 the conv would lower them into the
/// batched small maps' blocks, slower here than the `gemm` crate.
const MAX_ROWS: usize = 32;

/// A Gemm whose B is a constant, and C absent, one value, or one value per column: run as a
/// 1x1 conv of A's rows (a batch of m 1x1 maps with k channels) into n channels, so that B is
/// packed once per prepared graph for the conv kernels. The `gemm` crate packs B again on
/// every call: FaceNet's last layer (B 1792 x 512, 3.7 MB) took 1.03-1.09 ms at batch 16
/// there, 0.18-0.32 here (onnxruntime 0.20), by nn_layers on the 2-core VM (2026-12-06).
/// Only for large weights, few rows ([`ConstantB::suits`]) and many columns: over more rows
/// the packing weighs little, and the `gemm` crate was the faster (O-Net's 1152 -> 256 over 32
/// rows: 0.30 ms, 0.42 here; R-Net's 576 -> 128 over 128: 0.28 and 0.32); under 16 columns the
/// conv kernels' vectors of output channels run part-empty (R-Net's 128 -> 2: 0.01 and 0.03).
/// It keeps B transposed, and packed, beside the graph's B: 7.4 MB more for FaceNet's.
pub struct ConstantB {
    /// alpha·op(B), transposed: the conv's weights `[n, k, 1, 1]`.
    weights: Vec<f32>,
    /// beta·C per column; zeros without C.
    bias: Vec<f32>,
    conv: Conv,
    packed: PackedConv,
    k: usize,
}

impl ConstantB {
    /// `None` where the Gemm does not fit (A transposed, B not 2-D, another C), its weights are
    /// under [`MIN_WEIGHTS`] or [`MIN_COLUMNS`] wide, or the CPU has no microkernels.
    pub fn new(g: &Gemm, b: &Tensor, c: Option<&Tensor>) -> Option<ConstantB> {
        let weights = b.shape().len() == 2 && b.len() >= MIN_WEIGHTS;
        let columns = b.shape().get(if g.trans_b { 0 } else { 1 }).is_some_and(|&n| n >= MIN_COLUMNS);
        (weights && columns).then(|| Self::of(g, b, c)).flatten()
    }

    /// The Gemm as a 1x1 conv, whatever the size of B; `None` as for [`ConstantB::new`], but
    /// for the sizes.
    fn of(g: &Gemm, b: &Tensor, c: Option<&Tensor>) -> Option<ConstantB> {
        if g.trans_a || b.shape().len() != 2 || !conv::microkernels_available() {
            return None;
        }
        let [rows, cols] = [b.shape()[0], b.shape()[1]];
        let (k, n) = if g.trans_b { (cols, rows) } else { (rows, cols) };
        let bias = match c {
            Some(c) if g.beta != 0.0 => match c.data() {
                [v] => vec![g.beta * v; n],
                values if values.len() == n && c.shape().last() == Some(&n) => {
                    values.iter().map(|v| g.beta * v).collect()
                }
                _ => return None,
            },
            _ => vec![0.0; n],
        };
        let b = b.data();
        let weights = (0..n)
            .flat_map(|j| (0..k).map(move |i| if g.trans_b { b[j * k + i] } else { b[i * n + j] }))
            .map(|v| g.alpha * v)
            .collect();
        let window = Window {
            kernel: [1, 1],
            strides: [1, 1],
            dilations: [1, 1],
            padding: Padding::Explicit { top: 0, left: 0, bottom: 0, right: 0 },
        };
        let conv = Conv { window, group: 1, activation: g.activation.clone(), residual: false };
        Some(ConstantB { weights, bias, conv, packed: PackedConv::default(), k })
    }

    /// Whether A's rows are few enough to run here (the `gemm` crate runs the others).
    pub fn suits(&self, a: &Tensor) -> bool {
        a.shape().first().is_some_and(|&m| m < MAX_ROWS)
    }

    /// A·B (+ C, then the activation) into `out` (`[m, n]`, every value written).
    pub fn run(
        &self,
        a: &Tensor,
        mut out: Tensor,
        spare: &mut Spare,
        deadline: &Deadline,
    ) -> Result<Tensor, NnError> {
        let (m, n) = (a.shape()[0], self.bias.len());
        let g = shape::conv_geometry(&self.conv, &[m, a.shape()[1], 1, 1], &[n, self.k, 1, 1])?;
        let packed = Some(&self.packed);
        conv::conv2d(
            a.data(),
            &self.weights,
            packed,
            &self.bias,
            &self.conv,
            &g,
            out.data_mut(),
            spare,
            deadline,
        )?;
        deadline.check()?;
        Ok(out)
    }
}

/// Writes beta·C broadcast to [m, n] into `dst`.
fn fill_broadcast(dst: &mut [f32], c: &Tensor, m: usize, n: usize, beta: f32) -> Result<(), NnError> {
    let s = c.shape();
    let (rows, cols) = match s.len() {
        0 => (1, 1),
        1 => (1, s[0]),
        _ => (s[s.len() - 2], s[s.len() - 1]),
    };
    for i in 0..m {
        for j in 0..n {
            let v = c.data()[(if rows == 1 { 0 } else { i }) * cols + if cols == 1 { 0 } else { j }];
            dst[i * n + j] = beta * v;
        }
    }
    Ok(())
}

/// numpy matmul with broadcast batch dimensions.
pub fn matmul(a: &Tensor, b: &Tensor, deadline: &Deadline) -> Result<Tensor, NnError> {
    let out_shape = shape::matmul(a.shape(), b.shape())?;
    let shape::MatmulDims { m, k, n, batch, a_batch, b_batch } = shape::matmul_dims(a.shape(), b.shape())?;
    let (a_batch, b_batch) = (&a_batch[..], &b_batch[..]);
    let batches: usize = batch.iter().product();
    let mut out = zeroed_values(element_count(&out_shape)?)?;
    for index in 0..batches {
        let a_off = broadcast_offset(index, &batch, a_batch) * m * k;
        let b_off = broadcast_offset(index, &batch, b_batch) * k * n;
        sgemm(
            m,
            n,
            k,
            &mut out[index * m * n..][..m * n],
            false,
            (&a.data()[a_off..], k as isize, 1),
            (&b.data()[b_off..], n as isize, 1),
            1.0,
            deadline,
        )?;
    }
    Tensor::new(out_shape, out)
}

/// The flat index into a batch of shape `own` (right-aligned, broadcast) that output batch
/// `index` of shape `full` reads.
fn broadcast_offset(mut index: usize, full: &[usize], own: &[usize]) -> usize {
    let mut offset = 0;
    let mut stride = 1;
    for i in (0..full.len()).rev() {
        let coord = index % full[i];
        index /= full[i];
        let j = i as isize - (full.len() - own.len()) as isize;
        if j >= 0 {
            let d = own[j as usize];
            if d != 1 {
                offset += coord * stride;
            }
            stride *= d;
        }
    }
    offset
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.5 - 1.0).collect()
    }

    /// The conv path against SGEMM (which the conformance suite holds to onnxruntime), on
    /// weights too small for [`ConstantB::new`] to pick it: alpha, beta, B transposed or not,
    /// C absent, one value, per column as [n] and [1, n], each fused activation.
    #[test]
    fn constant_b_on_the_conv_kernels_matches_sgemm() {
        if !conv::microkernels_available() {
            return;
        }
        let (k, n) = (70, 24);
        let slopes = std::sync::Arc::new(Tensor::new(vec![n], values(n, 9)).unwrap());
        let activations =
            [Activation::None, Activation::Relu, Activation::LeakyRelu(0.2), Activation::PRelu(slopes)];
        let cs: [Option<Vec<usize>>; 4] = [None, Some(vec![]), Some(vec![n]), Some(vec![1, n])];
        for (case, (activation, c_shape)) in
            activations.iter().flat_map(|a| cs.iter().map(move |c| (a, c))).enumerate()
        {
            for (m, trans_b) in [(1, false), (5, true), (31, false)] {
                let g =
                    Gemm { alpha: 0.75, beta: -1.5, trans_a: false, trans_b, activation: activation.clone() };
                let b_shape = if trans_b { vec![n, k] } else { vec![k, n] };
                let b = Tensor::new(b_shape, values(k * n, case)).unwrap();
                let c =
                    c_shape.as_ref().map(|s| Tensor::new(s.clone(), values(s.iter().product(), 3)).unwrap());
                let a = Tensor::new(vec![m, k], values(m * k, 5)).unwrap();
                let constant = ConstantB::of(&g, &b, c.as_ref()).expect("fits");
                assert!(constant.suits(&a));
                let mut spare = Spare::default();
                let out = spare.output(vec![m, n]).unwrap();
                let ours = constant.run(&a, out, &mut spare, &Deadline::NONE).unwrap();
                let sgemm = gemm_op(&g, &a, &b, c.as_ref(), &[m, n], &Deadline::NONE).unwrap();
                for (i, (x, y)) in ours.data().iter().zip(sgemm.data()).enumerate() {
                    assert!(
                        (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                        "case {case}, m {m}, value {i}: {x} against {y}"
                    );
                }
            }
        }
    }

    #[test]
    fn only_large_weights_over_many_columns_leave_sgemm() {
        let g = Gemm { alpha: 1.0, beta: 1.0, trans_a: false, trans_b: false, activation: Activation::None };
        let b = |k: usize, n: usize| Tensor::new(vec![k, n], vec![0.0; k * n]).unwrap();
        let fits = |b: &Tensor| ConstantB::new(&g, b, None).is_some();
        assert!(!fits(&b(1152, 256)), "O-Net's 1.2 MB stay on SGEMM");
        assert!(!fits(&b(1 << 16, 8)), "too few columns");
        assert_eq!(fits(&b(1792, 512)), conv::microkernels_available(), "FaceNet's last layer");
    }
}
