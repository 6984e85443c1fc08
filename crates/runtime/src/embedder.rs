//! An embedder guest (a face-recognition model): `info` once at load, then `embed` per batch
//! of normalized faces.

use std::sync::Arc;

use super::bindings::embedder::EmbedderPre;
use super::bindings::{embedder as wit, types};
use super::contract::{check_embedder_info, check_facens};
use super::detector::reported;
use super::error::{GuestError, GuestFailure};
use super::loaded::{Loaded, declared_info};
use super::session::world_bindings;
use super::{GuestComponent, GuestRuntime, LoadError, World};
use refacen_face::{AlignmentTemplate, EmbedderInfo};

world_bindings!(wit::Embedder, EmbedderPre, wit::EmbedderInfo, "embedder", World::Embedder);
declared_info!(EmbedderInfo, check_embedder_info);

/// A model ready to run. Not `Sync`: give each worker its own (they share compiled code).
pub type Embedder = Loaded<wit::Embedder, EmbedderInfo>;

impl Embedder {
    pub(super) fn new(runtime: &GuestRuntime, component: Arc<GuestComponent>) -> Result<Self, LoadError> {
        Self::load(runtime, component, |info| {
            let l = &info.template.landmarks;
            EmbedderInfo {
                name: info.name,
                version: info.version,
                description: info.description,
                facen_size: info.facen_size,
                template: AlignmentTemplate {
                    width: info.template.width,
                    height: info.template.height,
                    landmarks: [l.left_eye, l.right_eye, l.nose, l.mouth_left, l.mouth_right]
                        .map(|p| [p.x, p.y]),
                },
            }
        })
    }

    /// One facen per face. Every face should already be `template.width` x `template.height`
    /// (the host warps them); the guest refuses others.
    pub fn embed(&mut self, faces: &[image::RgbImage]) -> Result<Vec<Vec<f32>>, GuestError> {
        let wit_faces: Vec<types::Image> = faces
            .iter()
            .map(|f| types::Image { width: f.width(), height: f.height(), rgb: f.as_raw() })
            .collect();
        let answer = self.session.call("embed", |b: &wit::Embedder, s| b.call_embed(s, &wit_faces))?;
        let facens = answer.map_err(|e| self.error("embed", GuestFailure::Reported(reported(e))))?;
        check_facens(&facens, faces.len(), self.info().facen_size)
            .map_err(|violation| self.error("embed", GuestFailure::InvalidAnswer(violation)))?;
        Ok(facens)
    }
}
