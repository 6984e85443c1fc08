//! The face data every part of refacen shares, independent of the WIT bindings: faces,
//! guest parameters, alignment templates, and how facens and boxes are compared ([`metric`]).

pub mod metric;

use serde::{Deserialize, Serialize};

pub use metric::{Metric, box_iou, distance};

/// A detected face in image pixel coordinates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Face {
    /// [x1, y1, x2, y2]: left, top, right, bottom.
    pub bbox: [f32; 4],
    pub score: f32,
    /// [x, y] of: left eye, right eye (as seen in the image), nose tip, left and right mouth
    /// corners.
    pub landmarks: [[f32; 2]; 5],
}

impl Face {
    pub fn width(&self) -> f32 {
        self.bbox[2] - self.bbox[0]
    }

    pub fn height(&self) -> f32 {
        self.bbox[3] - self.bbox[1]
    }

    /// Intersection over union of two boxes.
    pub fn iou(&self, other: &Face) -> f32 {
        box_iou(self.bbox, other.bbox)
    }
}

/// A guest parameter's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamKind {
    Float,
    Int,
    Bool,
    Text,
}

/// A guest parameter's value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl std::fmt::Display for ParamValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParamValue::Float(v) => write!(f, "{v}"),
            ParamValue::Int(v) => write!(f, "{v}"),
            ParamValue::Bool(v) => write!(f, "{v}"),
            ParamValue::Text(v) => write!(f, "{v}"),
        }
    }
}

/// A parameter a guest declares.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ParamSpec {
    pub name: String,
    pub kind: ParamKind,
    pub default: ParamValue,
    pub help: String,
}

impl ParamSpec {
    /// Parses the text of `--param NAME=VALUE` as this parameter's kind.
    pub fn parse(&self, text: &str) -> Result<ParamValue, String> {
        let bad = |what: &str| format!("parameter `{}` takes {what}, got `{text}`", self.name);
        match self.kind {
            ParamKind::Float => text.trim().parse().map(ParamValue::Float).map_err(|_| bad("a number")),
            ParamKind::Int => text.trim().parse().map(ParamValue::Int).map_err(|_| bad("an integer")),
            ParamKind::Bool => match text.trim() {
                "true" | "1" | "yes" | "on" => Ok(ParamValue::Bool(true)),
                "false" | "0" | "no" | "off" => Ok(ParamValue::Bool(false)),
                _ => Err(bad("true or false")),
            },
            ParamKind::Text => Ok(ParamValue::Text(text.to_string())),
        }
    }
}

/// Parses `NAME=VALUE` settings against the parameters a guest declares.
pub fn parse_params(
    specs: &[ParamSpec],
    settings: &[String],
    guest: &str,
) -> Result<Vec<(String, ParamValue)>, String> {
    let mut parsed: Vec<(String, ParamValue)> = Vec::new();
    for setting in settings {
        let (name, value) = setting
            .split_once('=')
            .ok_or_else(|| format!("--param `{setting}` must look like NAME=VALUE"))?;
        let spec = specs.iter().find(|s| s.name == name.trim()).ok_or_else(|| {
            let known: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
            format!(
                "guest `{guest}` has no parameter `{}` (its parameters: {})",
                name.trim(),
                known.join(", ")
            )
        })?;
        let value = spec.parse(value)?;
        parsed.retain(|(n, _)| n != &spec.name);
        parsed.push((spec.name.clone(), value));
    }
    Ok(parsed)
}

/// Where a model wants the five landmarks in its input image.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AlignmentTemplate {
    pub width: u32,
    pub height: u32,
    pub landmarks: [[f32; 2]; 5],
}

impl AlignmentTemplate {
    /// Same size, and landmarks within a thousandth of a pixel: a face warped to one needs no
    /// second warp for the other (guests declare their templates as decimal numbers).
    pub fn same_geometry(&self, other: &AlignmentTemplate) -> bool {
        self.width == other.width
            && self.height == other.height
            && self
                .landmarks
                .iter()
                .flatten()
                .zip(other.landmarks.iter().flatten())
                .all(|(a, b)| (a - b).abs() < 1e-3)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DetectorInfo {
    pub name: String,
    pub version: String,
    pub description: String,
    pub params: Vec<ParamSpec>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EmbedderInfo {
    pub name: String,
    pub version: String,
    pub description: String,
    pub facen_size: u32,
    pub template: AlignmentTemplate,
}
