//! Snapshots: the face store at one moment, thumbnails inlined, as a JSON file.

use std::collections::BTreeSet;
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;

use base64::Engine;
use serde::{Deserialize, Serialize};

use refacen_store::{FacePages, FaceRecord, FaceStore};

use crate::{ReportError, SNAPSHOT_FORMAT, SNAPSHOT_VERSION};

/// The face store at one moment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Always [`SNAPSHOT_FORMAT`].
    pub format: String,
    /// [`SNAPSHOT_VERSION`] when written.
    pub version: u32,
    /// Unix time (seconds) the snapshot was taken.
    pub taken_at: i64,
    /// The Uploads directory (absolute) when it was given.
    pub uploads: Option<String>,
    /// The face store, as the store names itself.
    pub store: String,
    /// Photos with face records in the store.
    pub photos_in_store: u64,
    /// The photos this snapshot covers (all of them unless `--photos` capped it), sorted.
    pub photos: Vec<String>,
    /// Every face record of those photos, lost ones included, in id order.
    pub faces: Vec<SnapshotFace>,
}

/// One face record and its thumbnail.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnapshotFace {
    #[serde(flatten)]
    pub record: FaceRecord,
    /// The thumbnail file's bytes (JPEG), standard base64; null when the face has none.
    pub thumbnail_base64: Option<String>,
}

impl Snapshot {
    /// Whether `--photos` left photos out.
    pub fn is_partial(&self) -> bool {
        (self.photos.len() as u64) < self.photos_in_store
    }

    /// Reads and checks a snapshot file.
    pub fn read(path: &Path) -> Result<Snapshot, ReportError> {
        let file = std::fs::File::open(path)
            .map_err(|source| ReportError::ReadSnapshot { path: path.to_path_buf(), source })?;
        let value: serde_json::Value = serde_json::from_reader(BufReader::new(file))
            .map_err(|e| ReportError::NotASnapshot { path: path.to_path_buf(), message: e.to_string() })?;
        match value.get("format").and_then(|f| f.as_str()) {
            Some(SNAPSHOT_FORMAT) => {}
            _ => {
                return Err(ReportError::NotASnapshot {
                    path: path.to_path_buf(),
                    message: format!("no \"format\": \"{SNAPSHOT_FORMAT}\""),
                });
            }
        }
        let version = value.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
        if version != u64::from(SNAPSHOT_VERSION) {
            return Err(ReportError::SnapshotVersion { path: path.to_path_buf(), found: version as u32 });
        }
        let snapshot: Snapshot = serde_json::from_value(value)
            .map_err(|e| ReportError::NotASnapshot { path: path.to_path_buf(), message: e.to_string() })?;
        for face in &snapshot.faces {
            if let Some(b64) = &face.thumbnail_base64 {
                base64::engine::general_purpose::STANDARD.decode(b64).map_err(|e| ReportError::Garbled {
                    path: path.to_path_buf(),
                    id: face.record.id,
                    message: format!("its thumbnail is not base64 ({e})"),
                })?;
            }
            if let Some(facen) = &face.record.facen
                && facen.values.len() != facen.model.facen_size as usize
            {
                return Err(ReportError::Garbled {
                    path: path.to_path_buf(),
                    id: face.record.id,
                    message: format!(
                        "its facen has {} values, its model `{}` makes {}",
                        facen.values.len(),
                        facen.model.name,
                        facen.model.facen_size
                    ),
                });
            }
        }
        Ok(snapshot)
    }

    /// Writes the snapshot to `path` (through a temporary file renamed into place, so that an
    /// interrupted write never leaves a truncated snapshot under its name).
    pub fn write(&self, path: &Path) -> Result<(), ReportError> {
        let fail = |source| ReportError::Write { path: path.to_path_buf(), source };
        let name = path.file_name().map_or("snapshot".into(), |n| n.to_string_lossy().into_owned());
        let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
        let result = (|| {
            let mut out = BufWriter::new(std::fs::File::create(&tmp)?);
            serde_json::to_writer(&mut out, self)?;
            out.write_all(b"\n")?;
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(fail)
    }
}

/// Takes a snapshot of `store`: every face record of its photos (of the first `max_photos`
/// photos, in the order their first face was recorded, when given) and the thumbnails they
/// name under `files_dir`. A face whose thumbnail file is missing gets none (the count is
/// returned); when every one is missing `files_dir` is wrong and that is an error.
pub async fn take_snapshot(
    store: &dyn FaceStore,
    files_dir: &Path,
    uploads: Option<&Path>,
    max_photos: Option<usize>,
) -> Result<(Snapshot, u64), ReportError> {
    let mut photos_in_store: BTreeSet<String> = BTreeSet::new();
    let mut chosen: BTreeSet<String> = BTreeSet::new();
    let mut faces = Vec::new();
    let (mut named, mut missing) = (0u64, 0u64);
    let mut pages = FacePages::new(store, 1, 1024);
    while let Some(page) = pages.next_page().await? {
        for record in page {
            // Faces are never deleted, so a photo's first face id never changes: the same
            // cap chooses the same photos before and after a regeneration.
            if photos_in_store.insert(record.photo.clone()) && max_photos.is_none_or(|max| chosen.len() < max)
            {
                chosen.insert(record.photo.clone());
            }
            if !chosen.contains(&record.photo) {
                continue;
            }
            let thumbnail_base64 = match &record.thumbnail {
                Some(relative) => {
                    named += 1;
                    match std::fs::read(files_dir.join(relative)) {
                        Ok(bytes) => Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
                        Err(_) => {
                            missing += 1;
                            None
                        }
                    }
                }
                None => None,
            };
            faces.push(SnapshotFace { record, thumbnail_base64 });
        }
    }
    if named > 0 && missing == named {
        return Err(ReportError::NoThumbnails { files_dir: files_dir.to_path_buf(), count: named });
    }
    let uploads = uploads.map(|u| std::path::absolute(u).unwrap_or_else(|_| u.to_path_buf()));
    let snapshot = Snapshot {
        format: SNAPSHOT_FORMAT.into(),
        version: SNAPSHOT_VERSION,
        taken_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
        uploads: uploads.map(|u| u.display().to_string()),
        store: store.location(),
        photos_in_store: photos_in_store.len() as u64,
        photos: chosen.into_iter().collect(),
        faces,
    };
    Ok((snapshot, missing))
}
