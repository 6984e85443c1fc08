//! Resize (nearest and linear, every coordinate mode) and ConvTranspose.

use crate::ir::{ConvTranspose, Resize};
use crate::shape;
use crate::{ArgumentFault, Deadline, NnError, Tensor, zeroed_values};

/// Resize as one 1-D pass per resized axis (nearest and multilinear interpolation are
/// separable, so this computes what ONNX's N-D definition does).
pub fn resize(r: &Resize, x: &Tensor) -> Result<Tensor, NnError> {
    let geometry = shape::resize_geometry(r, x.shape())?;
    let mut current = x.clone();
    for (d, axis) in geometry.iter().enumerate() {
        if axis.input == axis.output && axis.scale == 1.0 {
            continue;
        }
        if axis.input == 0 {
            return Err(NnError::invalid_argument(ArgumentFault::EmptyResizeAxis {
                shape: x.shape().to_vec(),
            }));
        }
        let taps = shape::resize_taps(r, axis);
        let s = current.shape().to_vec();
        let outer: usize = s[..d].iter().product();
        let inner: usize = s[d + 1..].iter().product();
        let mut out_shape = s.clone();
        out_shape[d] = axis.output;
        let mut out = zeroed_values(outer * axis.output * inner)?;
        let src = current.data();
        super::for_each_chunk(&mut out, axis.output * inner, 1, |o, dst| {
            let plane = &src[o * axis.input * inner..(o + 1) * axis.input * inner];
            for (row, &(i0, i1, w0, w1)) in dst.chunks_mut(inner.max(1)).zip(&taps) {
                let (a, b) = (&plane[i0 * inner..(i0 + 1) * inner], &plane[i1 * inner..(i1 + 1) * inner]);
                if w1 == 0.0 {
                    row.copy_from_slice(a);
                } else {
                    row.iter_mut().zip(a.iter().zip(b)).for_each(|(y, (&p, &q))| *y = w0 * p + w1 * q);
                }
            }
        });
        current = Tensor::new(out_shape, out)?;
    }
    Ok(current)
}

/// A direct transposed convolution, one task per output plane.
pub fn conv_transpose(
    ct: &ConvTranspose,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    out_shape: Vec<usize>,
    deadline: &Deadline,
) -> Result<Tensor, NnError> {
    let g = shape::conv_transpose_geometry(ct, x.shape(), w.shape(), bias.map(|b| b.shape()))?;
    let [kh, kw] = ct.window.kernel;
    let [ih, iw] = g.in_hw;
    let [oh, ow] = g.out_hw;
    let cin_g = g.in_channels / ct.group;
    let cout_g = g.out_channels / ct.group;
    let mut out = Tensor::zeros(out_shape)?;
    let (xd, wd) = (x.data(), w.data());
    super::for_each_chunk(out.data_mut(), oh * ow, 1, |plane, dst| {
        if deadline.expired() {
            return;
        }
        let (n, co) = (plane / g.out_channels, plane % g.out_channels);
        let (group, m) = (co / cout_g, co % cout_g);
        dst.fill(bias.map_or(0.0, |b| b.data()[co]));
        for c in group * cin_g..(group + 1) * cin_g {
            let src = &xd[(n * g.in_channels + c) * ih * iw..][..ih * iw];
            let kernel = &wd[(c * cout_g + m) * kh * kw..][..kh * kw];
            for ky in 0..kh {
                for kx in 0..kw {
                    let k = kernel[ky * kw + kx];
                    for iy in 0..ih {
                        let oy = (iy * ct.window.strides[0] + ky * ct.window.dilations[0]) as isize
                            - g.pads[0] as isize;
                        if oy < 0 || oy >= oh as isize {
                            continue;
                        }
                        let row = &mut dst[oy as usize * ow..][..ow];
                        for ix in 0..iw {
                            let ox = (ix * ct.window.strides[1] + kx * ct.window.dilations[1]) as isize
                                - g.pads[1] as isize;
                            if ox >= 0 && ox < ow as isize {
                                row[ox as usize] += src[iy * iw + ix] * k;
                            }
                        }
                    }
                }
            }
        }
    });
    deadline.check()?;
    Ok(out)
}
