//! The dense f32 tensor every backend computes with.

use super::{ArgumentFault, Excess, NnError};

/// A dense, row-major f32 tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

impl Tensor {
    /// A tensor of `shape` holding `data`; fails when the lengths disagree.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self, NnError> {
        let expected = element_count(&shape)?;
        if expected != data.len() {
            return Err(NnError::invalid_argument(ArgumentFault::ValueCount {
                shape,
                expected,
                got: data.len(),
            }));
        }
        Ok(Tensor { shape, data })
    }

    /// A tensor of `shape` holding zeros; fails, rather than aborting the process, when its
    /// size overflows or the memory cannot be had.
    pub fn zeros(shape: Vec<usize>) -> Result<Self, NnError> {
        let data = zeroed_values(element_count(&shape)?)?;
        Ok(Tensor { shape, data })
    }

    pub fn scalar(value: f32) -> Self {
        Tensor { shape: vec![], data: vec![value] }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn data(&self) -> &[f32] {
        &self.data
    }

    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    pub fn into_data(self) -> Vec<f32> {
        self.data
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// The same data under another shape with the same number of elements.
    pub fn reshaped(mut self, shape: Vec<usize>) -> Result<Self, NnError> {
        if element_count(&shape)? != self.data.len() {
            return Err(NnError::invalid_argument(ArgumentFault::Reshape {
                from: self.shape,
                values: self.data.len(),
                to: shape,
            }));
        }
        self.shape = shape;
        Ok(self)
    }
}

/// The number of elements of `shape`, refusing shapes whose size overflows.
pub fn element_count(shape: &[usize]) -> Result<usize, NnError> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| NnError::too_large(Excess::Elements { shape: shape.to_vec() }))
}

/// `n` zeros, allocated fallibly: sizes a guest's graph decides must not abort the host when
/// the machine runs short.
pub fn zeroed_values(n: usize) -> Result<Vec<f32>, NnError> {
    let mut values = Vec::new();
    values
        .try_reserve_exact(n)
        .map_err(|_| NnError::too_large(Excess::Allocation { bytes: (n as u64).saturating_mul(4) }))?;
    values.resize(n, 0.0);
    Ok(values)
}
