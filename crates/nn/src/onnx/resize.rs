//! Resize and Upsample: modes, coordinate transformations and the scales or sizes input.

use super::Importer;
use super::attrs::Attrs;
use super::proto::NodeProto;
use crate::ir::{AspectPolicy, CoordinateMode, NearestMode, Op, Resize, ResizeMode, ResizeTarget};
use crate::{GraphFault, NnError};

impl Importer {
    pub(super) fn resize(&self, node: &NodeProto, attrs: &Attrs) -> Result<(Op, usize), NnError> {
        use AspectPolicy::*;
        use CoordinateMode::*;
        use NearestMode::*;
        let upsample = node.op_type == "Upsample";
        // Upsample and Resize-10 map coordinates asymmetrically and round nearest down.
        let legacy = upsample || self.opset < 11;
        let (nearest, coordinates) = if legacy {
            (Floor, Asymmetric)
        } else {
            (
                attrs.choice(
                    "nearest_mode",
                    "round_prefer_floor, round_prefer_ceil, floor, ceil",
                    [RoundPreferFloor, RoundPreferCeil, Floor, Ceil],
                )?,
                attrs.choice(
                    "coordinate_transformation_mode",
                    "half_pixel, half_pixel_symmetric, pytorch_half_pixel, align_corners, asymmetric",
                    [HalfPixel, HalfPixelSymmetric, PytorchHalfPixel, AlignCorners, Asymmetric],
                )?,
            )
        };
        let mode = attrs.choice(
            "mode",
            "nearest, linear, bilinear",
            [ResizeMode::Nearest(nearest), ResizeMode::Linear, ResizeMode::Linear],
        )?;
        attrs.only_zero("antialias", "0")?;
        attrs.only_zero("exclude_outside", "0")?;
        let aspect = attrs.choice(
            "keep_aspect_ratio_policy",
            "stretch, not_larger, not_smaller",
            [Stretch, NotLarger, NotSmaller],
        )?;
        let present = |i: usize| node.input.get(i).filter(|n| !n.is_empty()).is_some();
        let target = if upsample && self.opset < 9 {
            ResizeTarget::Scales(
                attrs
                    .floats("scales")?
                    .ok_or_else(|| attrs.error(GraphFault::Missing { what: "scales".into() }))?,
            )
        } else {
            // Upsample-9 and Resize-10: X, scales. Resize-11+: X, roi, scales, sizes.
            let scales_at = if legacy { 1 } else { 2 };
            let scales =
                if present(scales_at) { Some(self.float_constant(node, scales_at, attrs)?) } else { None };
            match scales.filter(|s| !s.is_empty()) {
                Some(s) => ResizeTarget::Scales(s.data().to_vec()),
                None if !legacy && present(3) => ResizeTarget::Sizes(self.int_input(node, 3, attrs)?.values),
                None => return Err(attrs.error(GraphFault::Missing { what: "scales or sizes".into() })),
            }
        };
        let axes = attrs.ints("axes")?;
        Ok((Op::Resize(Resize { mode, coordinates, target, axes, aspect }), 1))
    }
}
