//! The contract of wit/refacen.wit that the WIT types cannot say: what the host checks in a
//! guest's `info` and answers before anything downstream sees them. One set of checks serves
//! the host's calls (`Detector`, `Embedder`) and `refacen guests check`, so that a guest the
//! check passes is never refused by the host for its answers' shape.

use refacen_face::{DetectorInfo, EmbedderInfo, Face, ParamKind, ParamValue};

/// Most faces one `detect` answer may hold; more means a broken or hostile guest.
pub const MAX_FACES_PER_IMAGE: usize = 10_000;
/// Largest facen a model may declare.
pub const MAX_FACEN_SIZE: u32 = 1 << 16;
/// Largest input side a model may ask for, in pixels.
pub const MAX_INPUT_SIDE: u32 = 1024;

/// How an `info` or an answer breaks the contract.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Violation {
    #[error("{count} faces in one image (at most {MAX_FACES_PER_IMAGE})")]
    TooManyFaces { count: usize },
    #[error("face {face} has a non-finite coordinate or score")]
    NonFiniteFace { face: usize },
    #[error("face {face} has a malformed box {bbox:?}")]
    MalformedBox { face: usize, bbox: [f32; 4] },
    #[error("face {face} box {bbox:?} lies outside the {width}x{height} image")]
    BoxOutside { face: usize, bbox: [f32; 4], width: u32, height: u32 },
    #[error("{facens} facens for {faces} faces")]
    FacenCount { facens: usize, faces: usize },
    #[error("facen {facen} has {len} values, the model declares {declared}")]
    FacenSize { facen: usize, len: usize, declared: u32 },
    #[error("facen {facen} has a non-finite value")]
    NonFiniteFacen { facen: usize },
    #[error("facen size {0} (must be 1..={MAX_FACEN_SIZE})")]
    DeclaredFacenSize(u32),
    #[error("input size {width}x{height} (sides must be 1..={MAX_INPUT_SIDE})")]
    InputSize { width: u32, height: u32 },
    #[error("a non-finite template landmark")]
    NonFiniteTemplate,
    #[error(
        "the name `{name}` cannot be selected by name: it must be 1-64 characters of letters, digits, \
         `-`, `_` and `.`, not ending in `.wasm`"
    )]
    Name { name: String },
    #[error("two parameters are named `{name}`")]
    DuplicateParam { name: String },
    #[error("parameter `{name}` is declared {kind:?} but its default `{default}` is not")]
    DefaultKind { name: String, kind: ParamKind, default: ParamValue },
    #[error("parameter `{name}` has a non-finite default")]
    NonFiniteDefault { name: String },
}

/// A name operators can type after `--detector`/`--model`: the command line takes anything
/// with a `/` or ending in `.wasm` for a path.
fn check_name(name: &str) -> Result<(), Violation> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.len() > 64 || !name.chars().all(allowed) || name.ends_with(".wasm") {
        return Err(Violation::Name { name: name.into() });
    }
    Ok(())
}

/// A detector's `info`: a name it can be selected by, and parameters whose names are unique
/// and whose defaults are of their declared kind (the host parses `--param` by that kind).
pub fn check_detector_info(info: &DetectorInfo) -> Result<(), Violation> {
    check_name(&info.name)?;
    for (i, p) in info.params.iter().enumerate() {
        if info.params[..i].iter().any(|q| q.name == p.name) {
            return Err(Violation::DuplicateParam { name: p.name.clone() });
        }
        let kind_ok = matches!(
            (p.kind, &p.default),
            (ParamKind::Float, ParamValue::Float(_))
                | (ParamKind::Int, ParamValue::Int(_))
                | (ParamKind::Bool, ParamValue::Bool(_))
                | (ParamKind::Text, ParamValue::Text(_))
        );
        if !kind_ok {
            return Err(Violation::DefaultKind {
                name: p.name.clone(),
                kind: p.kind,
                default: p.default.clone(),
            });
        }
        if matches!(p.default, ParamValue::Float(v) if !v.is_finite()) {
            return Err(Violation::NonFiniteDefault { name: p.name.clone() });
        }
    }
    Ok(())
}

/// A model's `info`: a name, a facen size and an input size within bounds, finite landmarks.
pub fn check_embedder_info(info: &EmbedderInfo) -> Result<(), Violation> {
    check_name(&info.name)?;
    if info.facen_size == 0 || info.facen_size > MAX_FACEN_SIZE {
        return Err(Violation::DeclaredFacenSize(info.facen_size));
    }
    let t = &info.template;
    if t.width == 0 || t.height == 0 || t.width > MAX_INPUT_SIDE || t.height > MAX_INPUT_SIDE {
        return Err(Violation::InputSize { width: t.width, height: t.height });
    }
    if !t.landmarks.iter().flatten().all(|v| v.is_finite()) {
        return Err(Violation::NonFiniteTemplate);
    }
    Ok(())
}

/// A `detect` answer for a `width` x `height` image: at most [`MAX_FACES_PER_IMAGE`] faces,
/// finite values, well-formed boxes that overlap the image (they may reach past its border:
/// a face cut by the frame).
pub fn check_faces(faces: &[Face], width: u32, height: u32) -> Result<(), Violation> {
    if faces.len() > MAX_FACES_PER_IMAGE {
        return Err(Violation::TooManyFaces { count: faces.len() });
    }
    let (w, h) = (width as f32, height as f32);
    for (i, face) in faces.iter().enumerate() {
        let finite = face
            .bbox
            .iter()
            .chain(face.landmarks.iter().flatten())
            .chain([&face.score])
            .all(|v| v.is_finite());
        if !finite {
            return Err(Violation::NonFiniteFace { face: i });
        }
        let [x1, y1, x2, y2] = face.bbox;
        if x2 <= x1 || y2 <= y1 {
            return Err(Violation::MalformedBox { face: i, bbox: face.bbox });
        }
        if x2 <= 0.0 || y2 <= 0.0 || x1 >= w || y1 >= h {
            return Err(Violation::BoxOutside { face: i, bbox: face.bbox, width, height });
        }
    }
    Ok(())
}

/// An `embed` answer for `faces` faces: one facen each, of the declared size, finite.
pub fn check_facens(facens: &[Vec<f32>], faces: usize, facen_size: u32) -> Result<(), Violation> {
    if facens.len() != faces {
        return Err(Violation::FacenCount { facens: facens.len(), faces });
    }
    for (i, facen) in facens.iter().enumerate() {
        if facen.len() != facen_size as usize {
            return Err(Violation::FacenSize { facen: i, len: facen.len(), declared: facen_size });
        }
        if !facen.iter().all(|v| v.is_finite()) {
            return Err(Violation::NonFiniteFacen { facen: i });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_the_command_line_would_take_for_paths_are_refused() {
        for bad in ["", "a/b", "nnd.wasm", "has space", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for good in ["nnd", "dlib-resnet-128", "arc_face.v2"] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn a_default_of_another_kind_is_refused() {
        let info = DetectorInfo {
            name: "d".into(),
            version: "1".into(),
            description: String::new(),
            params: vec![refacen_face::ParamSpec {
                name: "t".into(),
                kind: ParamKind::Float,
                default: ParamValue::Text("x".into()),
                help: String::new(),
            }],
        };
        let err = check_detector_info(&info).unwrap_err().to_string();
        assert!(err.contains("parameter `t` is declared Float"), "{err}");
    }
}
