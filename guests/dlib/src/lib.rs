//! `dlib`: dlib's CNN face detector (`mmod_human_face_detector.dat`, CC0) followed by dlib's
//! 5-point shape predictor (`shape_predictor_5_face_landmarks.dat`, CC0), both from PyPI
//! face_recognition_models 0.3.0, as a refacen detector; the equivalent of dlib's Python
//! `cnn_face_detection_model_v1(img, 0)` and `shape_predictor(img, box)`.
//!
//! - The photo (scaled down first when its longer side exceeds `max-size`, as FindFace's
//!   regenerate does) is normalized and tiled with its pyramid levels ([`pyramid`]);
//! - the host runs the network's convolutions on the tiled image through wasi-nn (the graph is
//!   converted from dlib's file by `cargo xtask weights`, xtask/src/convert/mmod.rs);
//! - the score map is decoded into boxes with dlib's window mapping and non-max suppression
//!   ([`mmod`]); confidences are dlib's (the score above `adjust-threshold`, typically ~1 for
//!   a clear face);
//! - the regression trees of the shape predictor run here, on the full-size photo ([`shape`]),
//!   and their five parts become refacen's five landmarks ([`landmarks`]).
//!
//! Boxes are dlib's inclusive pixel rectangles `[left, top, right, bottom]` in the photo.

pub mod landmarks;
pub mod mmod;
pub mod pyramid;
pub mod shape;

#[cfg(target_arch = "wasm32")]
mod component;

/// The detector network's graph and its input's name (xtask/src/convert/mmod.rs).
pub const DETECTOR_ONNX: &[u8] = include_bytes!("../weights/mmod_human_face_detector.onnx");
pub const DETECTOR_INPUT: &str = "image";
/// The shape predictor in the converter's flat format (xtask/src/convert/shape_predictor.rs).
pub const SHAPE_PREDICTOR: &[u8] = include_bytes!("../weights/shape_predictor_5.rsp");

/// The detector's settings (its parameters).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    /// Added to dlib's detection threshold of 0: negative finds more faces, positive fewer.
    pub adjust_threshold: f64,
    /// Photos whose longer side is larger are scaled down to it before detection (0: never).
    pub max_size: u32,
}

impl Settings {
    pub const DEFAULT: Settings = Settings { adjust_threshold: 0.0, max_size: 1200 };
}

/// A face as the detector finds it: box and parts in photo pixels.
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    pub rect: [i64; 4],
    pub confidence: f32,
    /// dlib's five parts, in the predictor's order.
    pub parts: [[i64; 2]; 5],
    /// refacen's five landmarks derived from them.
    pub landmarks: [[f64; 2]; 5],
}

/// Detects the faces of an RGB photo with `network` (the converted detector graph).
pub fn detect(
    network: &impl kit::Network,
    predictor: &shape::ShapePredictor,
    rgb: &[u8],
    width: usize,
    height: usize,
    settings: &Settings,
) -> Result<Vec<Detection>, String> {
    let longer = width.max(height);
    let max = settings.max_size as usize;
    let (scale, small, sw, sh) = if max > 0 && longer > max {
        let scale = max as f64 / longer as f64;
        let (sw, sh) =
            (((width as f64) * scale).round() as usize, ((height as f64) * scale).round() as usize);
        let (sw, sh) = (sw.max(1), sh.max(1));
        (scale, Some(pyramid::resize_rgb(rgb, width, height, sw, sh)), sw, sh)
    } else {
        (1.0, None, width, height)
    };
    let layout = pyramid::Layout::new(sw, sh, mmod::PADDING, mmod::OUTER_PADDING);
    if layout.levels.is_empty() || layout.width.min(layout.height) < mmod::MIN_INPUT_SIDE {
        return Ok(Vec::new());
    }
    let input = layout.tensor(small.as_deref().unwrap_or(rgb), mmod::MEAN);
    drop(small);
    let input = kit::Tensor::new(vec![1, 3, layout.height, layout.width], input);
    let outputs = network.run(input)?;
    let scores = match outputs.into_iter().next() {
        Some(t) if t.dims.len() == 4 && t.dims[0] == 1 && t.dims[1] == 1 => t,
        Some(t) => {
            return Err(format!(
                "the detector network returned a {:?} tensor, expected [1, 1, h, w]",
                t.dims
            ));
        }
        None => return Err("the detector network returned no output".into()),
    };
    let (h, w) = (scores.dims[2], scores.dims[3]);
    let found = mmod::decode(&scores.data, w, h, &layout, settings.adjust_threshold);
    Ok(found
        .into_iter()
        .map(|d| {
            let up = |v: i64| (v as f64 / scale).round() as i64;
            let r = d.rect;
            let rect = [up(r.left), up(r.top), up(r.right), up(r.bottom)];
            let predicted = predictor.predict(rgb, width, height, rect);
            let parts: [[i64; 2]; 5] = std::array::from_fn(|i| predicted[i]);
            let landmarks = landmarks::from_parts(&parts.map(|[x, y]| [x as f64, y as f64]));
            Detection { rect, confidence: d.confidence, parts, landmarks }
        })
        .collect())
}
