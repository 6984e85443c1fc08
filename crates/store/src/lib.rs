//! Where regenerated faces go. The face record schema is defined once, here; every store (the
//! embedded one, and the database stores) keeps exactly these records.

mod brute_force;
mod embedded;
#[cfg(feature = "mongo")]
mod mongo;
mod names;
mod progress;
// The retries are the database stores'.
#[cfg_attr(not(any(feature = "mongo", feature = "tarantool")), allow(dead_code))]
mod retry;
mod search;
#[cfg(feature = "tarantool")]
pub mod tarantool;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use brute_force::{BruteForce, Hit, brute_force_search};
pub use embedded::{EmbeddedStore, Holder};
#[cfg(feature = "mongo")]
pub use mongo::MongoStore;
pub use names::{PhotoName, escape_controls};
pub use progress::{FAILURES_KEPT, FailedItem, ShardProgress, target_fingerprint};
pub use retry::RetryWindow;
pub use search::{Copied, SearchCopier, SearchStore};

use refacen_face::{Face, ParamValue};

pub type FaceId = u64;

/// Which detector found a face, and how it was set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetectorProvenance {
    pub name: String,
    pub version: String,
    /// sha256 of the detector's `.wasm` file.
    pub sha256: String,
    /// Every parameter's effective value (the operator's or the declared default).
    pub params: BTreeMap<String, ParamValue>,
}

/// Which model computed a facen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelProvenance {
    pub name: String,
    pub version: String,
    /// sha256 of the model's `.wasm` file.
    pub sha256: String,
    pub facen_size: u32,
}

/// A face feature vector with the model that computed it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Facen {
    pub values: Vec<f32>,
    pub model: ModelProvenance,
    /// Unix time (seconds) of the computation.
    pub at: i64,
}

/// One face of one photo. Faces are never deleted: a face a re-detection no longer finds is
/// marked `lost` and keeps its id and data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaceRecord {
    pub id: FaceId,
    /// The photo's key: its path relative to Uploads, with `/` separators (see [`PhotoName`]
    /// for paths that are not UTF-8).
    pub photo: String,
    /// The box and landmarks are in the photo's displayed (upright) frame, after its EXIF
    /// orientation (this value, 1-8) was applied. Absent in records from refacen versions
    /// that detected in the stored frame.
    #[serde(default)]
    pub orientation: Option<u8>,
    pub bbox: [f32; 4],
    pub score: f32,
    pub landmarks: [[f32; 2]; 5],
    /// The normalized face (PNG), relative to the derived-files directory.
    pub normalized: Option<String>,
    /// The thumbnail (JPEG), relative to the derived-files directory.
    pub thumbnail: Option<String>,
    pub facen: Option<Facen>,
    pub lost: bool,
    pub detector: DetectorProvenance,
    /// Unix time (seconds) of the detection.
    pub detected_at: i64,
    /// The search store's copy of this face (its facen, or its absence once lost) may be
    /// stale: set when the record is written while a search store is configured, cleared
    /// once the search store has it, so a run killed in between catches up on the next.
    #[serde(default)]
    pub search_pending: bool,
}

impl FaceRecord {
    pub fn face(&self) -> Face {
        Face { bbox: self.bbox, score: self.score, landmarks: self.landmarks }
    }
}

/// What the store knows of one photo in Uploads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhotoRecord {
    /// The photo's key: relative to Uploads, with `/` separators (see [`PhotoName`]).
    pub path: String,
    /// The EXIF orientation (1-8) applied before detection; absent in records from refacen
    /// versions that ignored it, whose photos are detected again once.
    #[serde(default)]
    pub orientation: Option<u8>,
    /// sha256 of the file when it was last detected.
    pub sha256: String,
    /// Every face of the photo ever recorded, lost ones included.
    pub faces: Vec<FaceId>,
    /// The detector and settings of the last detection.
    pub detector: DetectorProvenance,
    /// What the last detection regenerated ("normalized", "thumbs").
    pub outputs: Vec<String>,
    pub detected_at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{location}: {message}")]
    Backend { location: String, message: String },
    /// A database driver's error told in one line; the driver's own error is its source
    /// (which `refacen -v` prints).
    #[error("{location}: {message}")]
    Driver {
        location: String,
        message: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Another process has the embedded store open (redb's lock on the file).
    #[error(
        "{}: another refacen{} is working on this state directory (its face store {} is locked); wait for \
         it to finish or stop it, then run this again",
        store.parent().map_or(String::new(), |d| d.display().to_string()),
        holder.as_ref().map_or(String::new(), |h| format!(" ({h})")),
        store.file_name().map_or(String::new(), |n| n.to_string_lossy().into_owned())
    )]
    InUse { store: std::path::PathBuf, holder: Option<Holder> },
    #[error(
        "{location}: record {key} cannot be read ({message}); it was written by another refacen version or is damaged"
    )]
    Corrupt { location: String, key: String, message: String },
}

/// A face store. A crash while a photo is committed leaves its photo record as it was before
/// or as it is after; faces already written by then are found again by
/// [`FaceStore::faces_of_photo`], so that rerunning the photo keeps their ids.
#[async_trait::async_trait]
pub trait FaceStore: Send + Sync {
    /// Where the store is, for messages.
    fn location(&self) -> String;

    async fn photo(&self, path: &str) -> Result<Option<PhotoRecord>, StoreError>;

    /// The records of `ids` that exist, in id order.
    async fn faces(&self, ids: &[FaceId]) -> Result<Vec<FaceRecord>, StoreError>;

    /// Every face recorded for the photo at `path` (lost ones included), in id order.
    async fn faces_of_photo(&self, path: &str) -> Result<Vec<FaceRecord>, StoreError>;

    /// Reserves `count` new face ids for the faces of `photo`. No id ever goes to two faces.
    /// When the last reservation was for `photo` and its commit never happened (the run was
    /// killed in between), its unused ids are handed out again rather than new ones, so that
    /// the rerun gives the faces the ids an uninterrupted run would have.
    async fn allocate_ids(&self, photo: &str, count: usize) -> Result<Vec<FaceId>, StoreError>;

    /// Writes a photo and its faces (inserting them, or updating the fields refacen owns), the
    /// photo record last. Fields of existing records that refacen does not own stay.
    async fn commit_photo(&self, photo: PhotoRecord, faces: Vec<FaceRecord>) -> Result<(), StoreError>;

    /// Replaces the facens of existing faces and sets their `search_pending`.
    async fn set_facens(&self, facens: Vec<(FaceId, Facen)>, search_pending: bool) -> Result<(), StoreError>;

    /// Up to `limit` faces with ids from `from` on, in id order (paging: start the next page
    /// after the last id returned; [`FacePages`] does).
    async fn scan_faces(&self, from: FaceId, limit: usize) -> Result<Vec<FaceRecord>, StoreError>;

    /// Up to `limit` faces with `search_pending` set (any of them), in id order.
    async fn search_pending(&self, limit: usize) -> Result<Vec<FaceRecord>, StoreError>;

    /// Clears `search_pending` on `ids`.
    async fn clear_search_pending(&self, ids: &[FaceId]) -> Result<(), StoreError>;

    /// Up to `limit` photo records with keys after `after` (from the first without), in key order.
    async fn scan_photos(&self, after: Option<&str>, limit: usize) -> Result<Vec<PhotoRecord>, StoreError>;

    /// Writes (replaces) one shard's progress document, keyed by its `key`.
    async fn put_shard_progress(&self, progress: &ShardProgress) -> Result<(), StoreError>;

    /// One shard's progress document, if it has one.
    async fn shard_progress(&self, key: &str) -> Result<Option<ShardProgress>, StoreError>;

    /// Every shard's progress document, of every target, in key order.
    async fn all_shard_progress(&self) -> Result<Vec<ShardProgress>, StoreError>;
}

/// The faces of a store in id order, a page at a time, from one id on.
pub struct FacePages<'a> {
    store: &'a dyn FaceStore,
    /// The first id of the next page; None once the last was read.
    next: Option<FaceId>,
    page_size: usize,
}

impl<'a> FacePages<'a> {
    pub fn new(store: &'a dyn FaceStore, from: FaceId, page_size: usize) -> Self {
        FacePages { store, next: Some(from), page_size }
    }

    /// The next page, or None after the last face.
    pub async fn next_page(&mut self) -> Result<Option<Vec<FaceRecord>>, StoreError> {
        let Some(from) = self.next else { return Ok(None) };
        let page = self.store.scan_faces(from, self.page_size).await?;
        self.next = page.last().and_then(|f| f.id.checked_add(1));
        Ok((!page.is_empty()).then_some(page))
    }
}
