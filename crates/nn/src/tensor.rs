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
/// the machine runs short. The memory comes zeroed from the allocator (`calloc`), which for
/// the large outputs of a network's layers maps fresh pages the kernel has already zeroed,
/// instead of writing every byte once more (7% of a detection's time was that `memset`).
pub fn zeroed_values(n: usize) -> Result<Vec<f32>, NnError> {
    let too_large = || NnError::too_large(Excess::Allocation { bytes: (n as u64).saturating_mul(4) });
    if n == 0 {
        return Ok(Vec::new());
    }
    let layout = std::alloc::Layout::array::<f32>(n).map_err(|_| too_large())?;
    // SAFETY: `layout` has a non-zero size (n > 0). A non-null pointer from `alloc_zeroed`
    // with the layout of `[f32; n]` is what `Vec::from_raw_parts` asks for: allocated by the
    // global allocator with f32's alignment and `n * 4` bytes, capacity and length `n`, and
    // every value initialized (all-zero bytes are 0.0).
    unsafe {
        let ptr = std::alloc::alloc_zeroed(layout).cast::<f32>();
        if ptr.is_null() {
            return Err(too_large());
        }
        Ok(Vec::from_raw_parts(ptr, n, n))
    }
}
