//! A detector guest: `info` once at load, then `detect` per photo.

use std::sync::Arc;

use super::bindings::detector::DetectorPre;
use super::bindings::{detector as wit, types};
use super::contract::{check_detector_info, check_faces};
use super::error::{GuestError, GuestFailure, Reported};
use super::loaded::{Loaded, declared_info};
use super::session::world_bindings;
use super::{GuestComponent, GuestRuntime, LoadError, World};
use refacen_face::{DetectorInfo, Face, ParamSpec, ParamValue};

world_bindings!(wit::Detector, DetectorPre, wit::DetectorInfo, "detector", World::Detector);
declared_info!(DetectorInfo, check_detector_info);

/// A detector ready to run. Not `Sync`: give each worker its own (they share compiled code).
pub type Detector = Loaded<wit::Detector, DetectorInfo>;

impl Detector {
    pub(super) fn new(runtime: &GuestRuntime, component: Arc<GuestComponent>) -> Result<Self, LoadError> {
        Self::load(runtime, component, |info| DetectorInfo {
            name: info.name,
            version: info.version,
            description: info.description,
            params: info.params.into_iter().map(param_spec).collect(),
        })
    }

    /// Faces in an RGB image. `params` hold only what the operator set (validated with
    /// `face::parse_params`).
    pub fn detect(
        &mut self,
        image: &image::RgbImage,
        params: &[(String, ParamValue)],
    ) -> Result<Vec<Face>, GuestError> {
        let wit_image = types::Image { width: image.width(), height: image.height(), rgb: image.as_raw() };
        let wit_params: Vec<types::Param> =
            params.iter().map(|(name, value)| types::Param { name, value: to_wit_value(value) }).collect();
        let answer =
            self.session.call("detect", |b: &wit::Detector, s| b.call_detect(s, wit_image, &wit_params))?;
        let faces = answer.map_err(|e| self.error("detect", GuestFailure::Reported(reported(e))))?;
        let faces = from_wit_faces(faces);
        check_faces(&faces, image.width(), image.height())
            .map_err(|violation| self.error("detect", GuestFailure::InvalidAnswer(violation)))?;
        Ok(faces)
    }
}

/// The WIT faces as refacen's faces, in the host's landmark order.
fn from_wit_faces(faces: Vec<types::Face>) -> Vec<Face> {
    faces
        .into_iter()
        .map(|f| {
            let l = f.landmarks;
            Face {
                bbox: [f.bbox.x1, f.bbox.y1, f.bbox.x2, f.bbox.y2],
                score: f.score,
                landmarks: [l.left_eye, l.right_eye, l.nose, l.mouth_left, l.mouth_right].map(|p| [p.x, p.y]),
            }
        })
        .collect()
}

pub(super) fn reported(e: types::GuestError) -> Reported {
    match e {
        types::GuestError::InvalidInput(m) => Reported::InvalidInput(m),
        types::GuestError::InvalidParam(m) => Reported::InvalidParam(m),
        types::GuestError::Nn(m) => Reported::Nn(m),
        types::GuestError::Internal(m) => Reported::Internal(m),
    }
}

fn param_spec(p: types::ParamSpec) -> ParamSpec {
    use refacen_face::ParamKind;
    ParamSpec {
        name: p.name,
        kind: match p.kind {
            types::ParamKind::Float => ParamKind::Float,
            types::ParamKind::Int => ParamKind::Int,
            types::ParamKind::Bool => ParamKind::Bool,
            types::ParamKind::Text => ParamKind::Text,
        },
        default: from_wit_value(p.default),
        help: p.help,
    }
}

fn from_wit_value(v: types::ParamValueResult) -> ParamValue {
    match v {
        types::ParamValueResult::Float(x) => ParamValue::Float(x),
        types::ParamValueResult::Int(x) => ParamValue::Int(x),
        types::ParamValueResult::Bool(x) => ParamValue::Bool(x),
        types::ParamValueResult::Text(x) => ParamValue::Text(x),
    }
}

fn to_wit_value(v: &ParamValue) -> types::ParamValueParam<'_> {
    match v {
        ParamValue::Float(x) => types::ParamValueParam::Float(*x),
        ParamValue::Int(x) => types::ParamValueParam::Int(*x),
        ParamValue::Bool(x) => types::ParamValueParam::Bool(*x),
        ParamValue::Text(x) => types::ParamValueParam::Text(x),
    }
}
