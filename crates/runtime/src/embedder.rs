//! An embedder guest (a face-recognition model): `info` once at load, then `embed` per batch
//! of normalized faces.

use std::sync::Arc;

use super::bindings::embedder::EmbedderPre;
use super::bindings::{embedder as wit, types};
use super::contract::{check_embedder_info, check_facens};
use super::detector::reported;
use super::error::{GuestError, GuestFailure};
use super::session::{CallStats, Session, world_bindings};
use super::wasi_nn::NnUsage;
use super::{GuestComponent, GuestRuntime, LoadError, World};
use refacen_face::{AlignmentTemplate, EmbedderInfo};

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
        check_embedder_info(&embedder.info).map_err(|violation| {
            LoadError::Call(embedder.error("info", GuestFailure::InvalidAnswer(violation)))
        })?;
        Ok(embedder)
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
        check_facens(&facens, faces.len(), self.info.facen_size)
            .map_err(|violation| self.error("embed", GuestFailure::InvalidAnswer(violation)))?;
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
