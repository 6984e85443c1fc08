//! What a run regenerates: a [`Job`], and the guests that do it.

use std::sync::Arc;

use refacen_face::{AlignmentTemplate, ParamValue};
use refacen_runtime::GuestComponent;
use refacen_store::{DetectorProvenance, ModelProvenance};

/// What a `regenerate` run does.
pub enum Job {
    /// Detect faces in the originals again and write the outputs asked for.
    Redetect(Redetect),
    /// `--regenerate facens` alone: embed the stored normalized faces with the model, as
    /// findface-regenerate does for a new model. The originals are never read.
    Reembed(Reembed),
}

impl Job {
    /// The detector, when the run detects.
    pub fn detector(&self) -> Option<&DetectorSetup> {
        match self {
            Job::Redetect(job) => Some(&job.detector),
            Job::Reembed(_) => None,
        }
    }

    /// The model, when the run computes facens.
    pub fn model(&self) -> Option<&ModelSetup> {
        match self {
            Job::Redetect(job) => job.model.as_ref(),
            Job::Reembed(job) => Some(&job.model),
        }
    }
}

/// A run from the originals: detect, normalize, thumbnail, embed, commit.
pub struct Redetect {
    pub detector: DetectorSetup,
    /// Which of the normalized faces and thumbnails to write (`facens` follows `model`).
    pub outputs: Outputs,
    /// The model that embeds the faces found; `Some` exactly when facens are regenerated.
    pub model: Option<ModelSetup>,
}

/// A run over the stored normalized faces.
pub struct Reembed {
    pub model: ModelSetup,
    /// Leave faces whose facen already has this size (`--facen-size`).
    pub skip_facen_size: Option<u32>,
}

/// The detector of a run.
pub struct DetectorSetup {
    pub component: Arc<GuestComponent>,
    /// What the operator set (the guest applies its defaults to the rest).
    pub params: Vec<(String, ParamValue)>,
    pub provenance: DetectorProvenance,
}

/// The model of a run.
pub struct ModelSetup {
    pub component: Arc<GuestComponent>,
    pub provenance: ModelProvenance,
    pub template: AlignmentTemplate,
}

/// Which outputs to regenerate (`--regenerate normalized,thumbs,facens`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outputs {
    pub normalized: bool,
    pub thumbs: bool,
    pub facens: bool,
}

impl Outputs {
    pub const ALL: Outputs = Outputs { normalized: true, thumbs: true, facens: true };

    /// Whether the originals must be detected again (anything but facens alone).
    pub fn needs_detection(&self) -> bool {
        self.normalized || self.thumbs
    }

    /// Every output asked for, facens included: what identifies a run's target.
    pub fn listed(&self) -> Vec<String> {
        let mut names = self.file_names();
        if self.facens {
            names.push("facens".to_string());
        }
        names
    }

    /// The derived files a photo record says it has ("normalized", "thumbs").
    pub(crate) fn file_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        if self.normalized {
            names.push("normalized".to_string());
        }
        if self.thumbs {
            names.push("thumbs".to_string());
        }
        names
    }
}

impl std::str::FromStr for Outputs {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut outputs = Outputs { normalized: false, thumbs: false, facens: false };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "normalized" => outputs.normalized = true,
                "thumbs" => outputs.thumbs = true,
                "facens" => outputs.facens = true,
                other => {
                    return Err(format!("unknown output `{other}` (choose from normalized, thumbs, facens)"));
                }
            }
        }
        if outputs == (Outputs { normalized: false, thumbs: false, facens: false }) {
            return Err("nothing to regenerate: give normalized, thumbs and/or facens".into());
        }
        Ok(outputs)
    }
}
