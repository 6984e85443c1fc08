//! `refacen sync-search`: FindFace's `mongo2searchapi`: copy one model's facens from the face
//! store into its space of the Tarantool search store (created on every shard, its facen size
//! taken from the data), resumably, verify the counts, and optionally switch search to it.
//!
//! A sync stamps what it copies with a new generation of the space; at the end, rows it did not
//! copy (faces lost or re-embedded since an earlier sync) are swept. Interrupted, it resumes
//! after its last checkpoint with the same generation, reading only the faces after it: a
//! resume costs what is left. Search keeps answering from the active space throughout: only
//! `--activate` switches it, after the counts match.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;

use super::stores::ExistingStoresArgs;
use refacen_store::tarantool::{Checkpoint, TarantoolStore};
use refacen_store::{FaceId, FacePages, FaceRecord, FaceStore};

#[derive(Args, Debug)]
pub struct SyncSearchArgs {
    /// The model whose facens to copy, by the name its face records give (`refacen faces`).
    #[arg(long, value_name = "NAME")]
    pub model: String,

    /// Once the copy is verified, switch search to this model's space on every shard.
    #[arg(long)]
    pub activate: bool,

    /// Then drop every facen space search no longer answers from, on every shard.
    #[arg(long)]
    pub drop_inactive: bool,

    /// Copy everything again instead of resuming an interrupted sync.
    #[arg(long)]
    pub restart: bool,

    /// Facens per write to the search store.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_size: u32,

    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub stores: ExistingStoresArgs,
}

/// What a sync did.
#[derive(Debug, Default, Serialize)]
struct SyncSummary {
    model: String,
    facen_size: u32,
    space: String,
    shards: usize,
    /// Faces of the face store with a facen of the model, lost ones excluded.
    facens: u64,
    /// Face records read from the face store: all of them, or with a resume those after
    /// the checkpoint.
    faces_read: u64,
    copied: u64,
    /// The checkpoint an interrupted sync left, which this one resumed after.
    resumed_after: Option<FaceId>,
    /// Rows no face of the face store accounts for any more, removed.
    swept: u64,
    /// What the space holds at the end, summed over shards.
    space_count: u64,
    activated: bool,
    dropped: Vec<String>,
    elapsed: Duration,
}

pub fn run(args: &SyncSearchArgs) -> anyhow::Result<ExitCode> {
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    tokio.block_on(async {
        let (store, search) = args.stores.open_required("sync-search").await?;
        let summary = sync(args, store.as_ref(), &search).await?;
        let secs = summary.elapsed.as_secs_f64().max(1e-9);
        eprintln!(
            "sync-search: model `{}` ({} values) into `{}` on {} shard(s) of {}: {} facens in {}, {} faces read, {} \
             copied{}, {} stale removed; the space holds {}; {:.1} s, {:.0} facens/s",
            summary.model,
            summary.facen_size,
            summary.space,
            summary.shards,
            search.location(),
            summary.facens,
            store.location(),
            summary.faces_read,
            summary.copied,
            summary.resumed_after.map_or(String::new(), |id| format!(" (resumed after face {id})")),
            summary.swept,
            summary.space_count,
            secs,
            summary.copied as f64 / secs
        );
        if summary.activated {
            eprintln!("sync-search: search now answers from `{}`", summary.space);
        }
        for space in &summary.dropped {
            eprintln!("sync-search: dropped `{space}`");
        }
        if args.json {
            crate::outln!("{}", serde_json::to_string(&summary)?);
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// The facen size and space of the model: those of the interrupted sync a resume continues,
/// or else set by the first facen seen.
struct Target {
    facen_size: u32,
    space: String,
    checkpoint: Option<Checkpoint>,
    /// What set the facen size, for messages: a face, or the faces before the checkpoint.
    first: String,
}

async fn sync(
    args: &SyncSearchArgs,
    store: &dyn FaceStore,
    search: &TarantoolStore,
) -> anyhow::Result<SyncSummary> {
    let started = Instant::now();
    let mut summary =
        SyncSummary { model: args.model.clone(), shards: search.shard_count(), ..Default::default() };
    let progress = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    });
    let batch_size = args.batch_size as usize;
    let mut target: Option<Target> = None;
    let mut from: FaceId = 1;
    if !args.restart
        && let Some((space, checkpoint)) = search.interrupted_sync(&args.model).await?
    {
        let state = search.begin_sync(&space.name, true).await?;
        if let Some(checkpoint) = state.checkpoint {
            from = checkpoint.last_id.saturating_add(1);
            summary.facens = checkpoint.facens;
        }
        target = Some(Target {
            facen_size: space.facen_size,
            first: format!("faces up to {}", checkpoint.last_id),
            space: space.name,
            checkpoint: state.checkpoint,
        });
    }
    let mut batch: Vec<(FaceId, Vec<f32>)> = Vec::with_capacity(batch_size);
    let mut pages = FacePages::new(store, from, batch_size.max(256));
    while let Some(page) = pages.next_page().await? {
        summary.faces_read += page.len() as u64;
        for face in page {
            let Some(values) = facen_of(&face, &args.model) else { continue };
            let size = values.len() as u32;
            let target = match &mut target {
                Some(t) => t,
                None => {
                    let space = search.ensure_space(&args.model, size).await?;
                    let state = search.begin_sync(&space, !args.restart).await?;
                    target.insert(Target {
                        facen_size: size,
                        space,
                        checkpoint: state.checkpoint,
                        first: format!("face {}", face.id),
                    })
                }
            };
            if size != target.facen_size {
                bail!(
                    "{} and face {} of the face store hold facens of model `{}` with {} and {size} values: one \
                     model name, two models; regenerate the facens with one model, then sync with --restart",
                    target.first,
                    face.id,
                    args.model,
                    target.facen_size
                );
            }
            summary.facens += 1;
            batch.push((face.id, values));
            if batch.len() == batch_size {
                copy_batch(search, target, &mut batch, &mut summary).await?;
            }
        }
        if let Some(bar) = &progress {
            bar.set_message(format!("{} faces read, {} copied", summary.faces_read, summary.copied));
        }
    }
    drop(progress);
    let Some(target) = target else {
        bail!(
            "{} holds no facens of model `{}`; `refacen faces` lists the models of its records",
            store.location(),
            args.model
        );
    };
    copy_batch(search, &target, &mut batch, &mut summary).await?;
    summary.resumed_after = target.checkpoint.map(|c| c.last_id);
    summary.swept = search.finish_sync(&target.space).await?;
    summary.space_count = search.count(&target.space).await?;
    summary.facen_size = target.facen_size;
    summary.space = target.space.clone();
    if summary.space_count != summary.facens {
        bail!(
            "verification failed: {} holds {} facens of model `{}`, but space `{}` holds {} after the copy; \
             was the face store written to meanwhile? Run sync-search again with --restart",
            store.location(),
            summary.facens,
            args.model,
            target.space,
            summary.space_count
        );
    }
    if args.activate {
        search.activate(&target.space).await.context("switching search")?;
        summary.activated = true;
    }
    if args.drop_inactive {
        for space in search.spaces().await? {
            if !space.active {
                search.drop_space(&space.name).await?;
                summary.dropped.push(space.name);
            }
        }
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// The facen a face contributes to the model's space: not lost, computed by `model`.
fn facen_of(face: &FaceRecord, model: &str) -> Option<Vec<f32>> {
    let facen = face.facen.as_ref().filter(|f| !face.lost && f.model.name == model)?;
    Some(facen.values.clone())
}

async fn copy_batch(
    search: &TarantoolStore,
    target: &Target,
    batch: &mut Vec<(FaceId, Vec<f32>)>,
    summary: &mut SyncSummary,
) -> anyhow::Result<()> {
    let Some(last_id) = batch.last().map(|(id, _)| *id) else { return Ok(()) };
    search.put(&target.space, batch).await?;
    // `summary.facens` counts the facens up to the batch's last face, that one included.
    search.save_checkpoint(&target.space, Checkpoint { last_id, facens: summary.facens }).await?;
    summary.copied += batch.len() as u64;
    batch.clear();
    Ok(())
}
