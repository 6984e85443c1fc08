//! Comparing two snapshots: what each photo kept, lost and gained, and how the models' distances compare.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use rayon::prelude::*;
use serde::Serialize;

use refacen_face::{Metric, box_iou, distance};
use refacen_store::{DetectorProvenance, FaceId, FaceRecord, ModelProvenance};

use crate::{MAX_PAIR_FACES, NO_IDENTITY, ReportError, Snapshot};

/// Who is in each photo: `--identities FILE`, a JSON object of photo path → person.
#[derive(Clone, Debug, Default)]
pub struct Identities {
    by_photo: BTreeMap<String, String>,
}

impl Identities {
    pub fn read(path: &Path) -> Result<Identities, ReportError> {
        let fail = |message: String| ReportError::Identities { path: path.to_path_buf(), message };
        let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read it ({e})")))?;
        let by_photo: BTreeMap<String, String> = serde_json::from_str(&text).map_err(|e| {
            fail(format!(
                "not a JSON object of photo path to person, like {{\"2024/obama.jpg\": \"obama\"}} ({e})"
            ))
        })?;
        Ok(Identities { by_photo })
    }

    pub fn from_map(by_photo: BTreeMap<String, String>) -> Identities {
        Identities { by_photo }
    }

    /// The person in `photo` (relative to Uploads): the entry for its path, else for its file
    /// name; none when unlisted, "unknown" or "multiple".
    pub fn person(&self, photo: &str) -> Option<&str> {
        let name = photo.rsplit('/').next().unwrap_or(photo);
        self.by_photo
            .get(photo)
            .or_else(|| self.by_photo.get(name))
            .map(String::as_str)
            .filter(|p| !NO_IDENTITY.contains(p))
    }
}

/// How to compare.
#[derive(Clone, Debug)]
pub struct ReportOptions {
    /// Nearest neighbours per face (K).
    pub top: usize,
    pub metric: Metric,
    /// Who is in each photo; without it, faces of one photo count as "same" pairs.
    pub identities: Option<Identities>,
}

/// What one snapshot holds.
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotSummary {
    pub file: String,
    pub taken_at: i64,
    pub uploads: Option<String>,
    pub store: String,
    pub photos: u64,
    pub photos_in_store: u64,
    /// Face records, lost ones included.
    pub faces: u64,
    /// Faces not marked lost.
    pub faces_present: u64,
    pub faces_marked_lost: u64,
    /// Present faces with a facen.
    pub faces_with_facens: u64,
    /// The detectors and settings of the present faces, most used first.
    pub detectors: Vec<DetectorUse>,
    /// The models of the present faces' facens, most used first.
    pub models: Vec<ModelUse>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DetectorUse {
    pub detector: DetectorProvenance,
    pub faces: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ModelUse {
    pub model: ModelProvenance,
    pub faces: u64,
}

/// What happened to the faces of one photo.
#[derive(Clone, Debug, Serialize)]
pub struct PhotoChange {
    pub photo: String,
    pub kept: Vec<KeptFace>,
    /// Present before; lost or absent after.
    pub lost: Vec<FaceId>,
    /// Absent or lost before; present after.
    pub gained: Vec<FaceId>,
}

#[derive(Clone, Debug, Serialize)]
pub struct KeptFace {
    pub id: FaceId,
    /// Overlap (IoU) of the face's box before and after.
    pub box_iou: f32,
    pub score_before: f32,
    pub score_after: f32,
}

#[derive(Clone, Debug, Serialize)]
pub struct DetectorComparison {
    /// Photos compared: all of either snapshot, or those both cover when one was capped.
    pub photos: u64,
    /// Photos with a face lost or gained.
    pub photos_changed: u64,
    pub kept: u64,
    pub lost: u64,
    pub gained: u64,
    /// Photos with changes first, then by path.
    pub per_photo: Vec<PhotoChange>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Neighbour {
    pub id: FaceId,
    pub distance: f32,
}

/// A face's nearest neighbours under each model.
#[derive(Clone, Debug, Serialize)]
pub struct FaceNeighbours {
    pub id: FaceId,
    pub photo: String,
    pub before: Vec<Neighbour>,
    pub after: Vec<Neighbour>,
    /// Faces in both top-K lists.
    pub overlap: usize,
    pub top1_changed: bool,
}

/// Counts of distances in equal bins over `[0, max]`.
#[derive(Clone, Debug, Serialize)]
pub struct Histogram {
    pub max: f32,
    pub same: Vec<u64>,
    pub different: Vec<u64>,
}

/// How well one model's distances tell same-identity pairs from different-identity ones.
#[derive(Clone, Debug, Serialize)]
pub struct Separation {
    pub same_pairs: u64,
    pub different_pairs: u64,
    pub mean_same: Option<f32>,
    pub mean_different: Option<f32>,
    /// The distance threshold (same at or below it) with the best balanced accuracy.
    pub best_threshold: Option<f32>,
    /// The mean of the same-pair and different-pair accuracies at that threshold.
    pub best_balanced_accuracy: Option<f64>,
    /// The chance that a random same pair is closer than a random different pair.
    pub auc: Option<f64>,
    pub histogram: Histogram,
}

#[derive(Clone, Debug, Serialize)]
pub struct ModelComparison {
    pub before_model: ModelProvenance,
    pub after_model: ModelProvenance,
    /// The models differ in name or facen size.
    pub model_changed: bool,
    pub metric: String,
    /// Neighbours per face: `--top`, or fewer when fewer faces are compared.
    pub top: usize,
    /// Faces present in both snapshots with a facen of each snapshot's main model.
    pub faces: u64,
    /// Kept faces left out because a facen was missing or of another model.
    pub faces_excluded: u64,
    pub top1_changed: u64,
    /// Mean fraction of a face's top-K found in both lists (1: the same neighbours).
    pub mean_topk_overlap: Option<f64>,
    /// "identities" (from --identities) or "photos" (same photo vs different photos).
    pub pairs_by: String,
    /// Faces pairs were formed from (at most [`MAX_PAIR_FACES`]).
    pub pair_faces: u64,
    pub before: Separation,
    pub after: Separation,
    /// Faces whose top-1 changed first, then by id.
    pub neighbours: Vec<FaceNeighbours>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub before: SnapshotSummary,
    pub after: SnapshotSummary,
    pub detector: DetectorComparison,
    /// None when either snapshot has no facen.
    pub model: Option<ModelComparison>,
}

fn most_used<T: PartialEq + Clone>(items: impl Iterator<Item = T>) -> Vec<(T, u64)> {
    let mut counts: Vec<(T, u64)> = Vec::new();
    for item in items {
        match counts.iter_mut().find(|(t, _)| *t == item) {
            Some((_, n)) => *n += 1,
            None => counts.push((item, 1)),
        }
    }
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    counts
}

fn summary(file: &Path, snapshot: &Snapshot) -> SnapshotSummary {
    let present = || snapshot.faces.iter().map(|f| &f.record).filter(|r| !r.lost);
    let detectors = most_used(present().map(|r| r.detector.clone()))
        .into_iter()
        .map(|(detector, faces)| DetectorUse { detector, faces })
        .collect();
    let models = most_used(present().filter_map(|r| r.facen.as_ref().map(|f| f.model.clone())))
        .into_iter()
        .map(|(model, faces)| ModelUse { model, faces })
        .collect();
    SnapshotSummary {
        file: file.display().to_string(),
        taken_at: snapshot.taken_at,
        uploads: snapshot.uploads.clone(),
        store: snapshot.store.clone(),
        photos: snapshot.photos.len() as u64,
        photos_in_store: snapshot.photos_in_store,
        faces: snapshot.faces.len() as u64,
        faces_present: present().count() as u64,
        faces_marked_lost: snapshot.faces.iter().filter(|f| f.record.lost).count() as u64,
        faces_with_facens: present().filter(|r| r.facen.is_some()).count() as u64,
        detectors,
        models,
    }
}

/// Compares two snapshots of one Uploads (`before_file` and `after_file` name them in the
/// report and in errors).
pub fn compare(
    (before_file, before): (&Path, &Snapshot),
    (after_file, after): (&Path, &Snapshot),
    options: &ReportOptions,
) -> Result<Report, ReportError> {
    if let (Some(b), Some(a)) = (&before.uploads, &after.uploads)
        && b != a
    {
        return Err(ReportError::DifferentUploads {
            before_file: before_file.to_path_buf(),
            before: b.clone(),
            after_file: after_file.to_path_buf(),
            after: a.clone(),
        });
    }
    let before_photos: BTreeSet<&str> = before.photos.iter().map(String::as_str).collect();
    let after_photos: BTreeSet<&str> = after.photos.iter().map(String::as_str).collect();
    if !before_photos.is_empty() && !after_photos.is_empty() && before_photos.is_disjoint(&after_photos) {
        return Err(ReportError::NoPhotoInCommon {
            before_file: before_file.to_path_buf(),
            after_file: after_file.to_path_buf(),
        });
    }
    // A capped snapshot says nothing of the photos it left out.
    let photos: BTreeSet<&str> = if before.is_partial() || after.is_partial() {
        before_photos.intersection(&after_photos).copied().collect()
    } else {
        before_photos.union(&after_photos).copied().collect()
    };
    let (was, is) = (present(before, &photos), present(after, &photos));

    let mut per_photo: BTreeMap<&str, PhotoChange> = photos
        .iter()
        .map(|p| (*p, PhotoChange { photo: p.to_string(), kept: vec![], lost: vec![], gained: vec![] }))
        .collect();
    let ids: BTreeSet<FaceId> = was.keys().chain(is.keys()).copied().collect();
    for id in &ids {
        match (was.get(id), is.get(id)) {
            (Some(b), Some(a)) => {
                per_photo.get_mut(a.photo.as_str()).expect("photo compared").kept.push(KeptFace {
                    id: *id,
                    box_iou: box_iou(b.bbox, a.bbox),
                    score_before: b.score,
                    score_after: a.score,
                })
            }
            (Some(b), None) => per_photo.get_mut(b.photo.as_str()).expect("photo compared").lost.push(*id),
            (None, Some(a)) => per_photo.get_mut(a.photo.as_str()).expect("photo compared").gained.push(*id),
            (None, None) => unreachable!("ids come from either map"),
        }
    }
    let mut per_photo: Vec<PhotoChange> = per_photo.into_values().collect();
    let changed = |p: &PhotoChange| !p.lost.is_empty() || !p.gained.is_empty();
    per_photo.sort_by(|a, b| changed(b).cmp(&changed(a)).then_with(|| a.photo.cmp(&b.photo)));
    let detector = DetectorComparison {
        photos: per_photo.len() as u64,
        photos_changed: per_photo.iter().filter(|p| changed(p)).count() as u64,
        kept: per_photo.iter().map(|p| p.kept.len() as u64).sum(),
        lost: per_photo.iter().map(|p| p.lost.len() as u64).sum(),
        gained: per_photo.iter().map(|p| p.gained.len() as u64).sum(),
        per_photo,
    };

    let before_summary = summary(before_file, before);
    let after_summary = summary(after_file, after);
    let model = match (before_summary.models.first(), after_summary.models.first()) {
        (Some(b), Some(a)) => Some(compare_models((&b.model, &was), (&a.model, &is), &detector, options)),
        _ => None,
    };
    Ok(Report { before: before_summary, after: after_summary, detector, model })
}

/// The faces of `snapshot` not marked lost, of `photos`.
fn present<'a>(snapshot: &'a Snapshot, photos: &BTreeSet<&str>) -> HashMap<FaceId, &'a FaceRecord> {
    snapshot
        .faces
        .iter()
        .map(|f| &f.record)
        .filter(|r| !r.lost && photos.contains(r.photo.as_str()))
        .map(|r| (r.id, r))
        .collect()
}

/// The K nearest of `facens[i]` among the others (ties by index, so results are stable).
fn nearest(facens: &[&[f32]], metric: Metric, k: usize) -> Vec<Vec<(usize, f32)>> {
    (0..facens.len())
        .into_par_iter()
        .map(|i| {
            let mut all: Vec<(usize, f32)> = (0..facens.len())
                .filter(|&j| j != i)
                .map(|j| (j, distance(metric, facens[i], facens[j])))
                .collect();
            all.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
            all.truncate(k);
            all
        })
        .collect()
}

const HISTOGRAM_BINS: usize = 40;

fn separation(same: &mut [f32], different: &mut [f32], max: f32) -> Separation {
    same.sort_by(f32::total_cmp);
    different.sort_by(f32::total_cmp);
    let mean = |d: &[f32]| {
        (!d.is_empty()).then(|| (d.iter().map(|&x| x as f64).sum::<f64>() / d.len() as f64) as f32)
    };
    let bin = |d: f32| {
        (((d / max.max(f32::MIN_POSITIVE)) * HISTOGRAM_BINS as f32) as usize).min(HISTOGRAM_BINS - 1)
    };
    let mut histogram = Histogram { max, same: vec![0; HISTOGRAM_BINS], different: vec![0; HISTOGRAM_BINS] };
    same.iter().for_each(|&d| histogram.same[bin(d)] += 1);
    different.iter().for_each(|&d| histogram.different[bin(d)] += 1);
    let (mut best_threshold, mut best_balanced_accuracy, mut auc) = (None, None, None);
    if !same.is_empty() && !different.is_empty() {
        let (ns, nd) = (same.len() as f64, different.len() as f64);
        // Thresholds between consecutive distinct distances: "same" is d <= t.
        let mut candidates: Vec<f32> = same.iter().chain(different.iter()).copied().collect();
        candidates.sort_by(f32::total_cmp);
        candidates.dedup();
        let (mut best, mut at) = (0.5f64, candidates[0] - 1.0);
        let (mut i, mut j) = (0usize, 0usize);
        for &t in &candidates {
            while i < same.len() && same[i] <= t {
                i += 1;
            }
            while j < different.len() && different[j] <= t {
                j += 1;
            }
            let balanced = (i as f64 / ns + (nd - j as f64) / nd) / 2.0;
            if balanced > best {
                (best, at) = (balanced, t);
            }
        }
        best_threshold = Some(at.max(0.0));
        best_balanced_accuracy = Some(best);
        // AUC: for each same pair, the different pairs farther than it (ties count half).
        let mut wins = 0f64;
        let (mut lo, mut hi) = (0usize, 0usize);
        for &d in same.iter() {
            while lo < different.len() && different[lo] < d {
                lo += 1;
            }
            hi = hi.max(lo);
            while hi < different.len() && different[hi] <= d {
                hi += 1;
            }
            wins += (different.len() - hi) as f64 + (hi - lo) as f64 / 2.0;
        }
        auc = Some(wins / (ns * nd));
    }
    Separation {
        same_pairs: same.len() as u64,
        different_pairs: different.len() as u64,
        mean_same: mean(same),
        mean_different: mean(different),
        best_threshold,
        best_balanced_accuracy,
        auc,
        histogram,
    }
}

/// A face kept by both detectors: its id, photo, and facen before and after.
type KeptFacens = (FaceId, String, Vec<f32>, Vec<f32>);

fn compare_models(
    (before_model, was): (&ModelProvenance, &HashMap<FaceId, &FaceRecord>),
    (after_model, is): (&ModelProvenance, &HashMap<FaceId, &FaceRecord>),
    detector: &DetectorComparison,
    options: &ReportOptions,
) -> ModelComparison {
    let mut kept: Vec<FaceId> = detector.per_photo.iter().flat_map(|p| p.kept.iter().map(|k| k.id)).collect();
    kept.sort_unstable();
    let facen_of = |r: &FaceRecord, model: &ModelProvenance| -> Option<Vec<f32>> {
        r.facen.as_ref().filter(|f| f.model == *model).map(|f| f.values.clone())
    };
    let faces: Vec<KeptFacens> = kept
        .iter()
        .filter_map(|id| {
            let (b, a) = (was[id], is[id]);
            Some((*id, a.photo.clone(), facen_of(b, before_model)?, facen_of(a, after_model)?))
        })
        .collect();
    let faces_excluded = (kept.len() - faces.len()) as u64;
    let top = options.top.min(faces.len().saturating_sub(1));
    let before_facens: Vec<&[f32]> = faces.iter().map(|f| f.2.as_slice()).collect();
    let after_facens: Vec<&[f32]> = faces.iter().map(|f| f.3.as_slice()).collect();
    let near_before = nearest(&before_facens, options.metric, top);
    let near_after = nearest(&after_facens, options.metric, top);
    let mut neighbours: Vec<FaceNeighbours> = faces
        .iter()
        .enumerate()
        .map(|(i, (id, photo, _, _))| {
            let as_ids = |near: &[(usize, f32)]| -> Vec<Neighbour> {
                near.iter().map(|&(j, distance)| Neighbour { id: faces[j].0, distance }).collect()
            };
            let (b, a) = (as_ids(&near_before[i]), as_ids(&near_after[i]));
            let overlap = b.iter().filter(|n| a.iter().any(|m| m.id == n.id)).count();
            let top1_changed = b.first().map(|n| n.id) != a.first().map(|n| n.id);
            FaceNeighbours { id: *id, photo: photo.clone(), before: b, after: a, overlap, top1_changed }
        })
        .collect();
    let top1_changed = neighbours.iter().filter(|n| n.top1_changed).count() as u64;
    let mean_topk_overlap = (top > 0).then(|| {
        neighbours.iter().map(|n| n.overlap as f64 / top as f64).sum::<f64>() / neighbours.len() as f64
    });
    neighbours.sort_by(|a, b| b.top1_changed.cmp(&a.top1_changed).then(a.id.cmp(&b.id)));

    // Pairs: same identity (or same photo) against different.
    let pair_faces = &faces[..faces.len().min(MAX_PAIR_FACES)];
    let label = |photo: &str| -> Option<String> {
        match &options.identities {
            Some(identities) => identities.person(photo).map(str::to_string),
            None => Some(photo.to_string()),
        }
    };
    let labels: Vec<Option<String>> = pair_faces.iter().map(|f| label(&f.1)).collect();
    let pairs = |which: fn(&KeptFacens) -> &[f32]| -> (Vec<f32>, Vec<f32>) {
        let (mut same, mut different) = (Vec::new(), Vec::new());
        for i in 0..pair_faces.len() {
            let Some(li) = &labels[i] else { continue };
            for j in i + 1..pair_faces.len() {
                let Some(lj) = &labels[j] else { continue };
                let d = distance(options.metric, which(&pair_faces[i]), which(&pair_faces[j]));
                if li == lj { same.push(d) } else { different.push(d) }
            }
        }
        (same, different)
    };
    let (mut same_b, mut diff_b) = pairs(|f| f.2.as_slice());
    let (mut same_a, mut diff_a) = pairs(|f| f.3.as_slice());
    let max_of = |a: &[f32], b: &[f32]| a.iter().chain(b).copied().fold(0f32, f32::max);
    let (max_b, max_a) = (max_of(&same_b, &diff_b), max_of(&same_a, &diff_a));
    ModelComparison {
        before_model: before_model.clone(),
        after_model: after_model.clone(),
        model_changed: before_model.name != after_model.name
            || before_model.facen_size != after_model.facen_size,
        metric: options.metric.to_string(),
        top,
        faces: faces.len() as u64,
        faces_excluded,
        top1_changed,
        mean_topk_overlap,
        pairs_by: if options.identities.is_some() { "identities" } else { "photos" }.into(),
        pair_faces: pair_faces.len() as u64,
        before: separation(&mut same_b, &mut diff_b, max_b),
        after: separation(&mut same_a, &mut diff_a, max_a),
        neighbours,
    }
}
