//! An embedder guest (a face-recognition model): `info` once at load, then `embed` per batch
//! of normalized faces.

use std::sync::Arc;

use super::bindings::embedder::EmbedderPre;
use super::bindings::{embedder as wit, types};
use super::detector::reported;
use super::error::{GuestError, GuestFailure};
use super::session::{CallStats, Session, world_bindings};
use super::wasi_nn::NnUsage;
use super::{GuestComponent, GuestRuntime, LoadError, World};
use refacen_face::{AlignmentTemplate, EmbedderInfo};

/// Largest facen a model may declare.
pub const MAX_FACEN_SIZE: u32 = 1 << 16;
/// Largest input side a model may ask for, in pixels.
pub const MAX_INPUT_SIDE: u32 = 1024;

world_bindings!(wit::Embedder, EmbedderPre, "embedder", World::Embedder);

/// A model ready to run. Not `Sync`: give each worker its own (they share compiled code).
pub struct Embedder {
    session: Session<wit::Embedder>,
    info: EmbedderInfo,
}

impl Embedder {
    pub(super) fn new(runtime: &GuestRuntime, component: Arc<GuestComponent>) -> Result<Self, LoadError> {
        let mut session = Session::new(runtime, component)?;
        let info = session.call("info", |b: &wit::Embedder, s| b.call_info(s))?;
        let l = &info.template.landmarks;
        let info = EmbedderInfo {
            name: info.name,
            version: info.version,
            description: info.description,
            facen_size: info.facen_size,
            template: AlignmentTemplate {
                width: info.template.width,
                height: info.template.height,
                landmarks: [l.left_eye, l.right_eye, l.nose, l.mouth_left, l.mouth_right].map(|p| [p.x, p.y]),
            },
        };
        session.name = info.name.clone();
        let embedder = Embedder { session, info };
        embedder
            .validate_info()
            .map_err(|msg| LoadError::Call(embedder.error("info", GuestFailure::InvalidAnswer(msg))))?;
        Ok(embedder)
    }

    fn validate_info(&self) -> Result<(), String> {
        let info = &self.info;
        if info.facen_size == 0 || info.facen_size > MAX_FACEN_SIZE {
            return Err(format!("facen size {} (must be 1..={MAX_FACEN_SIZE})", info.facen_size));
        }
        let t = &info.template;
        if t.width == 0 || t.height == 0 || t.width > MAX_INPUT_SIDE || t.height > MAX_INPUT_SIDE {
            return Err(format!("input size {}x{} (sides must be 1..={MAX_INPUT_SIDE})", t.width, t.height));
        }
        if !t.landmarks.iter().flatten().all(|v| v.is_finite()) {
            return Err("a non-finite template landmark".into());
        }
        Ok(())
    }

    pub fn info(&self) -> &EmbedderInfo {
        &self.info
    }

    pub fn component(&self) -> &Arc<GuestComponent> {
        &self.session.component
    }

    /// Timing of the last `embed`.
    pub fn last_call(&self) -> CallStats {
        self.session.last_call
    }

    /// What the live instance holds in the host through wasi-nn (`None` before the first
    /// call and after a failed one, when there is no instance).
    pub fn nn_usage(&self) -> Option<NnUsage> {
        self.session.nn_usage()
    }

    /// One facen per face. Every face should already be `template.width` x `template.height`
    /// (the host warps them); the guest refuses others.
    pub fn embed(&mut self, faces: &[image::RgbImage]) -> Result<Vec<Vec<f32>>, GuestError> {
        let wit_faces: Vec<types::Image> = faces
            .iter()
            .map(|f| types::Image { width: f.width(), height: f.height(), rgb: f.as_raw().clone() })
            .collect();
        let answer = self.session.call("embed", |b: &wit::Embedder, s| b.call_embed(s, &wit_faces))?;
        let facens = answer.map_err(|e| self.error("embed", GuestFailure::Reported(reported(e))))?;
        if facens.len() != faces.len() {
            return Err(self.error(
                "embed",
                GuestFailure::InvalidAnswer(format!("{} facens for {} faces", facens.len(), faces.len())),
            ));
        }
        for (i, facen) in facens.iter().enumerate() {
            if facen.len() != self.info.facen_size as usize {
                return Err(self.error(
                    "embed",
                    GuestFailure::InvalidAnswer(format!(
                        "facen {i} has {} values, the model declares {}",
                        facen.len(),
                        self.info.facen_size
                    )),
                ));
            }
            if !facen.iter().all(|v| v.is_finite()) {
                return Err(self.error(
                    "embed",
                    GuestFailure::InvalidAnswer(format!("facen {i} has a non-finite value")),
                ));
            }
        }
        Ok(facens)
    }

    fn error(&self, call: &'static str, failure: GuestFailure) -> GuestError {
        GuestError {
            guest: self.info.name.clone(),
            file: self.session.component.path.display().to_string(),
            call,
            failure,
        }
    }
}
