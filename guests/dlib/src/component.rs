//! The `detector` world implemented with dlib's CNN face detector and shape predictor.

use kit::detector::{DetectorInfo, Face, Guest, GuestError, Image, Param, ParamSpec};
use kit::params::{self, Params};
use kit::{Loaded, WasiNnNetwork};

use crate::Settings;
use crate::shape::ShapePredictor;

struct Dlib;

kit::export_detector!(Dlib);

struct Models {
    network: WasiNnNetwork,
    predictor: ShapePredictor,
}

thread_local! {
    /// Loaded on the first `detect` and kept for the instance's life.
    static MODELS: Loaded<Models> = const { Loaded::new() };
}

fn param_specs() -> Vec<ParamSpec> {
    let d = Settings::DEFAULT;
    vec![
        params::float(
            "adjust-threshold",
            d.adjust_threshold,
            "Added to the detection threshold (0): negative finds more faces, positive fewer",
        ),
        params::int(
            "max-size",
            i64::from(d.max_size),
            "Photos whose longer side exceeds this are scaled down to it before detection (0: never)",
        ),
    ]
}

fn settings(set: &[Param]) -> Result<Settings, GuestError> {
    let specs = param_specs();
    let p = Params::new(&specs, set)?;
    let adjust_threshold = p.float("adjust-threshold");
    if !adjust_threshold.is_finite() {
        return Err(GuestError::InvalidParam(format!(
            "adjust-threshold must be a number, got {adjust_threshold}"
        )));
    }
    let max_size = p.int("max-size");
    let max_size = u32::try_from(max_size).ok().filter(|&m| m == 0 || m >= 16).ok_or_else(|| {
        GuestError::InvalidParam(format!("max-size must be 0 or at least 16, got {max_size}"))
    })?;
    Ok(Settings { adjust_threshold, max_size })
}

fn load() -> Result<Models, GuestError> {
    let network = WasiNnNetwork::load(crate::DETECTOR_ONNX, crate::DETECTOR_INPUT).map_err(GuestError::Nn)?;
    let predictor = ShapePredictor::parse(crate::SHAPE_PREDICTOR)
        .map_err(|e| GuestError::Internal(format!("the embedded shape predictor: {e}")))?;
    if predictor.parts() != 5 {
        return Err(GuestError::Internal(format!(
            "the embedded shape predictor has {} parts, not 5",
            predictor.parts()
        )));
    }
    Ok(Models { network, predictor })
}

impl Guest for Dlib {
    fn info() -> DetectorInfo {
        DetectorInfo {
            name: "dlib".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "dlib's CNN face detector (mmod_human_face_detector, CC0) with its 5-point shape \
                          predictor (shape_predictor_5_face_landmarks, CC0), from PyPI \
                          face_recognition_models 0.3.0; confidences as dlib's (about 1 for a clear face)"
                .into(),
            params: param_specs(),
        }
    }

    fn detect(image: Image, params: Vec<Param>) -> Result<Vec<Face>, GuestError> {
        let settings = settings(&params)?;
        let (w, h) = kit::check_image(&image)?;
        MODELS.with(|models| {
            let models = models.get_or_load(load)?;
            let found = crate::detect(&models.network, &models.predictor, &image.rgb, w, h, &settings)
                .map_err(GuestError::Nn)?;
            Ok(found
                .into_iter()
                .map(|d| {
                    kit::face(
                        d.rect.map(|v| v as f32),
                        d.confidence,
                        d.landmarks.map(|p| p.map(|v| v as f32)),
                    )
                })
                .collect())
        })
    }
}
