//! Resize and Upsample: modes, coordinate transformations and the scales or sizes input.

use super::Importer;
use super::attrs::Attrs;
use super::proto::NodeProto;
use crate::ir::{AspectPolicy, CoordinateMode, NearestMode, Op, Resize, ResizeMode, ResizeTarget};
use crate::{GraphFault, NnError, Unsupported};

impl Importer {
    pub(super) fn resize(&self, node: &NodeProto, attrs: &Attrs) -> Result<(Op, usize), NnError> {
        let refuse = |name: &str, value: String, supported: &'static str| {
            attrs.unsupported(Unsupported::Attribute { name: name.into(), value, supported })
        };
        let mode_name = attrs.string("mode")?.unwrap_or_else(|| "nearest".into());
        let upsample = node.op_type == "Upsample";
        // Upsample and Resize-10 map coordinates asymmetrically and round nearest down.
        let legacy = upsample || self.opset < 11;
        let nearest = match attrs.string("nearest_mode")?.as_deref() {
            _ if legacy => NearestMode::Floor,
            None | Some("round_prefer_floor") => NearestMode::RoundPreferFloor,
            Some("round_prefer_ceil") => NearestMode::RoundPreferCeil,
            Some("floor") => NearestMode::Floor,
            Some("ceil") => NearestMode::Ceil,
            Some(other) => {
                return Err(refuse(
                    "nearest_mode",
                    other.into(),
                    "round_prefer_floor, round_prefer_ceil, floor, ceil",
                ));
            }
        };
        let mode = match mode_name.as_str() {
            "nearest" => ResizeMode::Nearest(nearest),
            "linear" | "bilinear" => ResizeMode::Linear,
            other => return Err(refuse("mode", other.into(), "nearest, linear")),
        };
        let coordinates = match attrs.string("coordinate_transformation_mode")?.as_deref() {
            _ if legacy => CoordinateMode::Asymmetric,
            None | Some("half_pixel") => CoordinateMode::HalfPixel,
            Some("half_pixel_symmetric") => CoordinateMode::HalfPixelSymmetric,
            Some("pytorch_half_pixel") => CoordinateMode::PytorchHalfPixel,
            Some("align_corners") => CoordinateMode::AlignCorners,
            Some("asymmetric") => CoordinateMode::Asymmetric,
            Some(other) => {
                return Err(refuse(
                    "coordinate_transformation_mode",
                    other.into(),
                    "half_pixel, half_pixel_symmetric, pytorch_half_pixel, align_corners, asymmetric",
                ));
            }
        };
        let antialias = attrs.int("antialias", 0)?;
        if antialias != 0 {
            return Err(refuse("antialias", antialias.to_string(), "0"));
        }
        let exclude_outside = attrs.int("exclude_outside", 0)?;
        if exclude_outside != 0 {
            return Err(refuse("exclude_outside", exclude_outside.to_string(), "0"));
        }
        let aspect = match attrs.string("keep_aspect_ratio_policy")?.as_deref() {
            None | Some("stretch") => AspectPolicy::Stretch,
            Some("not_larger") => AspectPolicy::NotLarger,
            Some("not_smaller") => AspectPolicy::NotSmaller,
            Some(other) => {
                return Err(refuse(
                    "keep_aspect_ratio_policy",
                    other.into(),
                    "stretch, not_larger, not_smaller",
                ));
            }
        };
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
