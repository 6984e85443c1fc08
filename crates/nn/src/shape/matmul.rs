//! Gemm and numpy MatMul shapes.

use super::{broadcast, invalid};
use crate::NnError;
use crate::ir::Gemm;

pub(super) fn gemm(g: &Gemm, x: &[usize], b: &[usize], c: Option<&[usize]>) -> Result<Vec<usize>, NnError> {
    if x.len() != 2 || b.len() != 2 {
        return Err(invalid(format!("Gemm needs 2-D inputs, got {x:?} and {b:?}")));
    }
    let (m, ka) = if g.trans_a { (x[1], x[0]) } else { (x[0], x[1]) };
    let (kb, n) = if g.trans_b { (b[1], b[0]) } else { (b[0], b[1]) };
    if ka != kb {
        return Err(invalid(format!("Gemm inner dimensions differ: {x:?} x {b:?}")));
    }
    if let Some(c) = c
        && broadcast(c, &[m, n])? != [m, n]
    {
        return Err(invalid(format!("Gemm C {c:?} does not broadcast to [{m}, {n}]")));
    }
    Ok(vec![m, n])
}

/// The geometry of a numpy matmul: `batch` matrix products of `m x k` by `k x n`, `batch`
/// broadcast from the operands' leading dimensions `a_batch` and `b_batch` (1-D operands
/// promoted to matrices).
#[derive(Clone, Debug, PartialEq)]
pub struct MatmulDims {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub batch: Vec<usize>,
    pub a_batch: Vec<usize>,
    pub b_batch: Vec<usize>,
}

pub fn matmul_dims(a: &[usize], b: &[usize]) -> Result<MatmulDims, NnError> {
    if a.is_empty() || b.is_empty() {
        return Err(invalid("MatMul of a scalar".into()));
    }
    let a2: Vec<usize> = if a.len() == 1 { vec![1, a[0]] } else { a.to_vec() };
    let b2: Vec<usize> = if b.len() == 1 { vec![b[0], 1] } else { b.to_vec() };
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (kb, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != kb {
        return Err(invalid(format!("MatMul inner dimensions differ: {a:?} x {b:?}")));
    }
    let (a_batch, b_batch) = (a2[..a2.len() - 2].to_vec(), b2[..b2.len() - 2].to_vec());
    let batch = broadcast(&a_batch, &b_batch)?;
    Ok(MatmulDims { m, k, n, batch, a_batch, b_batch })
}

/// numpy matmul shape rules (1-D operands promoted and the added dimension removed).
pub fn matmul(a: &[usize], b: &[usize]) -> Result<Vec<usize>, NnError> {
    let MatmulDims { m, n, mut batch, .. } = matmul_dims(a, b)?;
    if a.len() > 1 {
        batch.push(m);
    }
    if b.len() > 1 {
        batch.push(n);
    }
    Ok(batch)
}
