//! `regenerate` as a streaming pipeline of stages, one module each:
//!
//! walk → lookup → detect → normalize → embed (batched) → commit
//!
//! Stages are joined by bounded channels, so however large Uploads is, only a few photos are
//! in memory at once. Detection and embedding run on blocking threads, each worker with its
//! own guest instance ([`workers`]); the walk is a thread; the commit runs on the tokio runtime
//! and alone owns the run's [`Summary`]. A [`Job::Reembed`] run (`--regenerate facens` alone)
//! never reads the originals: its lookup pages through the stored faces and its embed stage
//! reads their normalized faces back, as findface-regenerate does for a new model.

mod commit;
mod detect;
mod embed;
mod files;
mod fit;
mod identity;
mod job;
mod lookup;
mod normalize;
mod redetect;
mod reembed;
pub mod scope;
pub mod shard;
mod stages;
pub mod summary;
pub mod walk;
mod workers;

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime};

pub use embed::{EmbedResult, embed_all, model_input};
pub use files::DerivedFiles;
pub use fit::{FitError, Fitted, detect_fitting};
pub use identity::{Matching, match_faces};
pub use job::{DetectorSetup, Job, ModelSetup, Outputs, Redetect, Reembed};
pub use scope::{Glob, Scope, ScopeError};
pub use shard::{Shard, ShardError, ShardSource};
pub use summary::{FailureCause, Summary, Unit};
pub use walk::Share;

use refacen_imaging::DecodeLimits;
use refacen_runtime::GuestRuntime;
use refacen_store::{FaceId, FaceStore, SearchCopier};

/// How a `regenerate` run goes about its [`Job`].
pub struct Plan {
    pub uploads: PathBuf,
    /// Directories under Uploads that are refacen's own and never photos.
    pub skip_dirs: Vec<PathBuf>,
    pub derived: Arc<DerivedFiles>,
    /// Face ids to regenerate; `None`: all photos of Uploads.
    pub ids: Option<RangeInclusive<FaceId>>,
    pub share: Share,
    /// `--photos`, `--include`, `--exclude`.
    pub scope: Scope,
    pub workers: usize,
    pub batch_size: usize,
    /// Photos larger than this (either side, pixels) are scaled down before detection;
    /// without it, only photos too large for the detector's limits are (see [`detect_fitting`]).
    pub max_size: Option<u32>,
    /// Name every file skipped as not an image on stderr (`--list-skipped`).
    pub list_skipped: bool,
    pub identity_iou: f32,
    pub thumb_height: u32,
    pub thumb_margin: f32,
    pub decode_limits: DecodeLimits,
    pub dry_run: bool,
    /// Set (by Ctrl-C) to take no new photos or faces; those in flight are still committed.
    pub stop: Arc<AtomicBool>,
}

/// Reports progress while a run goes on.
pub trait Progress: Send + Sync {
    fn update(&self, summary: &Summary);
}

/// A failure that stops the whole run (the store is unusable); photos already committed stay.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] refacen_store::StoreError),
    #[error("cannot start a guest: {0}")]
    Guest(#[from] refacen_runtime::LoadError),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("a pipeline worker stopped unexpectedly: {0}")]
    Worker(#[from] tokio::task::JoinError),
}

fn now() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Runs `job` as `plan` says against `store` (and copies facens to `search`, when given) and
/// returns what it did. Per-photo failures are counted in the summary; only a store or
/// file-system failure ends the run early: then the error comes with the summary of what was
/// committed before.
pub async fn run(
    job: Job,
    plan: Plan,
    runtime: Arc<GuestRuntime>,
    store: Arc<dyn FaceStore>,
    search: Option<Arc<SearchCopier>>,
    progress: Arc<dyn Progress>,
) -> (Summary, Result<(), RunError>) {
    let started = Instant::now();
    let mut summary = Summary {
        dry_run: plan.dry_run,
        face_store: store.location(),
        search_store: search.as_ref().map(|s| s.location()),
        workers: plan.workers,
        threads: rayon::current_num_threads(),
        unit: match job {
            Job::Redetect(_) => Unit::Photos,
            Job::Reembed(_) => Unit::Faces,
        },
        ..Summary::default()
    };
    let context =
        RunContext { plan: Arc::new(plan), runtime: &runtime, store, search, progress: progress.as_ref() };
    let result = run_job(job, &context, &mut summary).await;
    summary.elapsed = started.elapsed();
    summary.interrupted = context.plan.stop.load(Ordering::Relaxed);
    progress.update(&summary);
    (summary, result)
}

/// What the stages of a run share.
pub(crate) struct RunContext<'a> {
    pub plan: Arc<Plan>,
    pub runtime: &'a GuestRuntime,
    pub store: Arc<dyn FaceStore>,
    pub search: Option<Arc<SearchCopier>>,
    pub progress: &'a dyn Progress,
}

async fn run_job(job: Job, context: &RunContext<'_>, summary: &mut Summary) -> Result<(), RunError> {
    let plan = &context.plan;
    if let Some(search) = context.search.as_ref().filter(|_| !plan.dry_run) {
        summary.search_caught_up = search.catch_up(context.store.as_ref()).await?;
    }
    match job {
        Job::Redetect(job) => {
            if !plan.dry_run {
                plan.derived.remove_stale_incoming();
            }
            stages::run(job, context, summary).await
        }
        Job::Reembed(job) => stages::run(job, context, summary).await,
    }
}
