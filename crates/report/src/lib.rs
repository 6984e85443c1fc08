//! The migration report: what a detector or model swap changes, seen before it is activated.
//!
//! A [`Snapshot`] is the face store at one moment: every face record (lost ones included) with
//! its thumbnail's bytes inlined, because `regenerate` overwrites the files it names by face id.
//! [`compare`] turns two snapshots of one Uploads into a [`Report`]: which faces each photo
//! kept, lost and gained, and how each model's nearest neighbours and same/different-person
//! distances compare. [`html::render`] draws it as one self-contained page.
//!
//! The snapshot file is JSON (see [`Snapshot`]): `format`, `version`, where it was taken, the
//! photos it covers and `faces`, each a face record exactly as `refacen faces --json` prints it
//! plus `thumbnail_base64` (the thumbnail file's bytes, standard base64, or null).

mod compare;
pub mod html;
mod snapshot;
pub mod svg;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

use refacen_store::{FaceId, StoreError};

pub use compare::*;
pub use snapshot::*;

/// What a snapshot file's `format` field says.
pub const SNAPSHOT_FORMAT: &str = "refacen-snapshot";
/// The snapshot layout this refacen writes and reads.
pub const SNAPSHOT_VERSION: u32 = 1;
/// Identity labels that name nobody in particular; faces so labelled are left out of pairs.
pub const NO_IDENTITY: [&str; 2] = ["unknown", "multiple"];
/// Pair statistics look at the first this many compared faces (in id order), so that their
/// cost stays bounded (n² / 2 distances per model) on large snapshots.
pub const MAX_PAIR_FACES: usize = 4000;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{}: cannot read the snapshot ({source}); take one with `refacen snapshot --uploads DIR --out {}`", path.display(), path.display())]
    ReadSnapshot { path: PathBuf, source: std::io::Error },
    #[error("{}: not a refacen snapshot ({message}); snapshots are the files `refacen snapshot --out FILE` writes", path.display())]
    NotASnapshot { path: PathBuf, message: String },
    #[error("{}: snapshot version {found}, this refacen reads version {SNAPSHOT_VERSION}; take the snapshot again with this refacen", path.display())]
    SnapshotVersion { path: PathBuf, found: u32 },
    #[error("{}: face {id}: {message}; the file is damaged: take the snapshot again", path.display())]
    Garbled { path: PathBuf, id: FaceId, message: String },
    #[error(
        "the snapshots are of different Uploads: {} is of {before}, {} of {after}; compare snapshots of the same Uploads, taken before and after the change",
        before_file.display(),
        after_file.display()
    )]
    DifferentUploads { before_file: PathBuf, before: String, after_file: PathBuf, after: String },
    #[error(
        "{} and {} have no photo in common: they are snapshots of different face stores; compare snapshots of the same store, taken before and after the change",
        before_file.display(),
        after_file.display()
    )]
    NoPhotoInCommon { before_file: PathBuf, after_file: PathBuf },
    #[error("{}: {message}", path.display())]
    Identities { path: PathBuf, message: String },
    #[error(
        "none of the {count} thumbnails the face records name is under {}: give the --files-dir (or --state-dir) that `regenerate` wrote to",
        files_dir.display()
    )]
    NoThumbnails { files_dir: PathBuf, count: u64 },
    #[error("{}: cannot write ({source})", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
}
