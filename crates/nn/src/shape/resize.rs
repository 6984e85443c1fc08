//! Resize geometry: output lengths, scales, and the input taps of each output coordinate.

use super::{invalid, normalize_axis};
use crate::ir::{AspectPolicy, CoordinateMode, NearestMode, Resize, ResizeMode, ResizeTarget};
use crate::{Excess, NnError};

/// How one axis of a Resize maps: input and output lengths and the scale that relates them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ResizeAxis {
    pub input: usize,
    pub output: usize,
    pub scale: f32,
}

/// Output lengths and scales of every dimension of a Resize of `x`.
pub fn resize_geometry(r: &Resize, x: &[usize]) -> Result<Vec<ResizeAxis>, NnError> {
    let rank = x.len();
    let axes: Vec<usize> = match &r.axes {
        None => (0..rank).collect(),
        Some(axes) => axes.iter().map(|&a| normalize_axis(a, rank, 0)).collect::<Result<_, _>>()?,
    };
    let mut geometry: Vec<ResizeAxis> =
        x.iter().map(|&d| ResizeAxis { input: d, output: d, scale: 1.0 }).collect();
    let too_large =
        || NnError::too_large(Excess::Overflow { computation: format!("Resize of {x:?} by {:?}", r.target) });
    match &r.target {
        ResizeTarget::Scales(scales) => {
            if scales.len() != axes.len() {
                return Err(invalid(format!(
                    "Resize: {} scales for {} axes of {x:?}",
                    scales.len(),
                    axes.len()
                )));
            }
            for (&a, &scale) in axes.iter().zip(scales) {
                if !(scale > 0.0 && scale.is_finite()) {
                    return Err(invalid(format!("Resize: scale {scale} is not positive")));
                }
                let out = (x[a] as f64 * scale as f64).floor();
                if out > u32::MAX as f64 {
                    return Err(too_large());
                }
                geometry[a] = ResizeAxis { input: x[a], output: out as usize, scale };
            }
        }
        ResizeTarget::Sizes(sizes) => {
            if sizes.len() != axes.len() || sizes.iter().any(|&s| s < 0) {
                return Err(invalid(format!("Resize: sizes {sizes:?} for {} axes of {x:?}", axes.len())));
            }
            let ratios = axes.iter().zip(sizes).map(|(&a, &s)| s as f32 / x[a] as f32);
            let common = match r.aspect {
                AspectPolicy::Stretch => None,
                AspectPolicy::NotLarger => Some(ratios.fold(f32::INFINITY, f32::min)),
                AspectPolicy::NotSmaller => Some(ratios.fold(0.0, f32::max)),
            };
            for (&a, &size) in axes.iter().zip(sizes) {
                geometry[a] = match common {
                    None => {
                        ResizeAxis { input: x[a], output: size as usize, scale: size as f32 / x[a] as f32 }
                    }
                    Some(scale) => {
                        // round half away from zero, as ONNX's reference does.
                        let out = (scale as f64 * x[a] as f64).round();
                        if out > u32::MAX as f64 {
                            return Err(too_large());
                        }
                        ResizeAxis { input: x[a], output: out as usize, scale }
                    }
                };
            }
        }
    }
    Ok(geometry)
}

/// The input coordinate output coordinate `o` of `axis` maps to (ONNX's
/// coordinate_transformation_mode). As in ONNX's reference, the "resized length" is
/// scale · input, which differs from the output's integer length when scales are given.
fn source_coordinate(mode: CoordinateMode, axis: &ResizeAxis, o: usize) -> f64 {
    let (input, scale) = (axis.input as f64, axis.scale as f64);
    let output = scale * input;
    let o = o as f64;
    match mode {
        CoordinateMode::HalfPixel => (o + 0.5) / scale - 0.5,
        CoordinateMode::HalfPixelSymmetric => {
            let adjustment = axis.output as f64 / output;
            let center = input / 2.0;
            center * (1.0 - adjustment) + (o + 0.5) / scale - 0.5
        }
        CoordinateMode::PytorchHalfPixel => {
            if output == 1.0 {
                -0.5
            } else {
                (o + 0.5) / scale - 0.5
            }
        }
        CoordinateMode::AlignCorners => {
            if output == 1.0 {
                0.0
            } else {
                o * (input - 1.0) / (output - 1.0)
            }
        }
        CoordinateMode::Asymmetric => o / scale,
    }
}

/// Per output coordinate of one axis: two input coordinates and their weights.
pub fn resize_taps(r: &Resize, axis: &ResizeAxis) -> Vec<(usize, usize, f32, f32)> {
    let last = axis.input as i64 - 1;
    let clamp = |i: i64| i.clamp(0, last) as usize;
    (0..axis.output)
        .map(|o| {
            let x = source_coordinate(r.coordinates, axis, o);
            let floor = x.floor();
            let frac = x - floor;
            let floor = floor as i64;
            match r.mode {
                ResizeMode::Nearest(mode) => {
                    let up = match mode {
                        _ if frac == 0.0 => false,
                        NearestMode::RoundPreferFloor => frac > 0.5,
                        NearestMode::RoundPreferCeil => frac >= 0.5,
                        NearestMode::Floor => false,
                        NearestMode::Ceil => true,
                    };
                    let i = clamp(floor + up as i64);
                    (i, i, 1.0, 0.0)
                }
                ResizeMode::Linear => (clamp(floor), clamp(floor + 1), (1.0 - frac) as f32, frac as f32),
            }
        })
        .collect()
}
