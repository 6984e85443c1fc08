//! `refacen status`: how far a migration is, across every process and host that works on it,
//! read from the stores (and Uploads) alone.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::Args;
use serde::Serialize;

use super::GuestArgs;
use super::stores::{FaceStoreArgs, StateDirArgs};
use refacen_pipeline::walk::{self, Entry};
use refacen_pipeline::{Scope, Share};
use refacen_store::{FacePages, FailedItem, PhotoName, ShardProgress, target_fingerprint};

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The Uploads directory of the migration (its photos are counted; its state directory
    /// holds the embedded store when there is no --mongo).
    #[arg(long, value_name = "DIR")]
    pub uploads: PathBuf,

    /// The target: the detector, its parameters, the model and the outputs, as given to
    /// `regenerate`.
    #[command(flatten)]
    pub target: super::regenerate::TargetArgs,

    /// The state and derived-files directories, as given to `regenerate`.
    #[command(flatten)]
    pub state: StateDirArgs,

    /// Print the status as JSON on stdout.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub face_store: FaceStoreArgs,

    #[command(flatten)]
    pub guest: GuestArgs,
}

/// The answer to "how far is the migration?".
#[derive(Debug, Default, Serialize)]
pub struct Status {
    /// The fingerprint runs of this target record their progress under.
    pub target: String,
    pub detector: Option<String>,
    pub model: Option<String>,
    /// `photos`, or `faces` for `--regenerate facens` alone.
    pub unit: &'static str,
    /// Photos in Uploads now (or stored faces that have a normalized face).
    pub total: u64,
    /// Of those, regenerated for this target.
    pub done: u64,
    pub to_do: u64,
    /// Failed on the last try of their shard and not done since.
    pub failed: u64,
    pub failures: BTreeMap<String, u64>,
    /// The failed ones the runs named (up to 200 per shard), with their causes.
    pub failed_items: Vec<FailedItem>,
    /// Faces of done photos found by this target's detector, and faces it no longer found.
    pub faces_current: u64,
    pub faces_lost: u64,
    /// As the runs counted them when committing: faces that kept their id, and new ones.
    pub faces_kept: u64,
    pub faces_new: u64,
    /// Faces whose facen (or removal) the search store has not received yet.
    pub search_pending: u64,
    /// Each shard that recorded its progress for this target.
    pub shards: Vec<ShardProgress>,
}

pub fn run(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let outputs = args.target.regenerate;
    if outputs.needs_detection() && !args.uploads.is_dir() {
        bail!("--uploads {}: not a directory", args.uploads.display());
    }
    let runtime = args.guest.runtime()?;
    let job = super::regenerate::job(&runtime, &args.guest.guest_dir(), &args.target, None)?;
    let detector = job.detector().map(|d| d.provenance.clone());
    let model = job.model().map(|m| m.provenance.clone());
    let layout = args.state.layout(&args.uploads);
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let store = tokio.block_on(args.face_store.open(&layout, true))?;
    let mut status = Status {
        target: target_fingerprint(detector.as_ref(), model.as_ref(), &outputs.listed()),
        detector: detector
            .as_ref()
            .map(|d| format!("{} {} (sha256 {})", d.name, d.version, short(&d.sha256))),
        model: model.as_ref().map(|m| format!("{} {} (sha256 {})", m.name, m.version, short(&m.sha256))),
        unit: if outputs.needs_detection() { "photos" } else { "faces" },
        ..Status::default()
    };
    let model_sha = model.as_ref().map(|m| m.sha256.clone());
    let facen_current = |face: &refacen_store::FaceRecord| {
        model_sha.as_ref().is_none_or(|sha| face.facen.as_ref().is_some_and(|f| &f.model.sha256 == sha))
    };

    // Which photos are done: a record by the target's detector with its outputs, and (below)
    // every face found with a facen of the target's model.
    let mut in_uploads: HashSet<String> = HashSet::new();
    let mut done: HashSet<String> = HashSet::new();
    if let Some(detector) = &detector {
        let skip = [layout.state_dir.clone(), layout.files_dir.clone()];
        walk::walk(&args.uploads, &skip, Share::ALL, &Scope::default(), |entry| {
            if let Entry::Photo { name, .. } = entry {
                in_uploads.insert(name.key);
            }
            true
        });
        let wanted: Vec<String> = outputs.listed().into_iter().filter(|o| o != "facens").collect();
        let mut after: Option<String> = None;
        loop {
            let page = tokio.block_on(store.scan_photos(after.as_deref(), 1024))?;
            let Some(last) = page.last().map(|p| p.path.clone()) else { break };
            for photo in page {
                if photo.detector == *detector && wanted.iter().all(|o| photo.outputs.contains(o)) {
                    done.insert(photo.path);
                }
            }
            after = Some(last);
        }
    }
    let mut pages = FacePages::new(store.as_ref(), 1, 1024);
    let mut faces_done = 0;
    let mut faces_total = 0;
    while let Some(page) = tokio.block_on(pages.next_page())? {
        for face in page {
            status.search_pending += u64::from(face.search_pending);
            if detector.is_none() {
                if !face.lost && face.normalized.is_some() {
                    faces_total += 1;
                    faces_done += u64::from(facen_current(&face));
                }
            } else if done.contains(&face.photo) {
                if face.lost {
                    status.faces_lost += 1;
                } else if facen_current(&face) {
                    status.faces_current += 1;
                } else {
                    done.remove(&face.photo);
                }
            }
        }
    }
    if detector.is_some() {
        status.total = in_uploads.len() as u64;
        status.done = in_uploads.iter().filter(|p| done.contains(*p)).count() as u64;
    } else {
        (status.total, status.done) = (faces_total, faces_done);
    }
    status.to_do = status.total - status.done;

    let done_display: HashSet<String> =
        done.iter().map(|key| PhotoName::display_of_key(key).into_owned()).collect();
    status.shards = tokio.block_on(store.all_shard_progress())?;
    status.shards.retain(|s| s.target == status.target);
    for shard in &status.shards {
        status.faces_kept += shard.faces_kept;
        status.faces_new += shard.faces_new;
        let named = shard.failed_items.len() as u64;
        for item in &shard.failed_items {
            if !done_display.contains(&item.item) {
                *status.failures.entry(item.cause.clone()).or_default() += 1;
                status.failed += 1;
                status.failed_items.push(item.clone());
            }
        }
        // Failures beyond those named are counted as the run counted them.
        status.failed += shard.failed.saturating_sub(named);
    }
    print(&status, args.json, &store.location())?;
    Ok(ExitCode::SUCCESS)
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

fn when(at: Option<i64>) -> String {
    let Some(at) = at else { return "-".into() };
    let ago = super::run_record::now() - at;
    format!("{ago} s ago")
}

fn print(status: &Status, json: bool, location: &str) -> anyhow::Result<()> {
    if json {
        crate::outln!("{}", serde_json::to_string(status)?);
        return Ok(());
    }
    let unit = status.unit;
    crate::outln!("target {} in {location}", status.target);
    if let Some(d) = &status.detector {
        crate::outln!("  detector {d}");
    }
    if let Some(m) = &status.model {
        crate::outln!("  model {m}");
    }
    crate::outln!(
        "{unit}: {} in all, {} done, {} to do ({} failed on the last try)",
        status.total,
        status.done,
        status.to_do,
        status.failed
    );
    for (cause, n) in &status.failures {
        crate::outln!("  {n} {cause}");
    }
    for item in status.failed_items.iter().take(20) {
        crate::outln!("  failed: {}", item.message);
    }
    if unit == "photos" {
        crate::outln!(
            "faces: {} found by the target's detector ({} kept their id, {} new, as the runs counted), {} lost",
            status.faces_current,
            status.faces_kept,
            status.faces_new,
            status.faces_lost
        );
    }
    crate::outln!("facens waiting for the search store: {}", status.search_pending);
    if status.shards.is_empty() {
        crate::outln!("shards: no run of this target recorded its progress yet");
    }
    for s in &status.shards {
        crate::outln!(
            "shard {:<12} {:<8} host {} (pid {}), {} run(s), started {}, last commit {}: {} {unit} done in all, \
             last run {} done, {} up to date, {} failed",
            s.shard,
            if s.finished { "finished" } else { "running or stopped" },
            s.host,
            s.pid,
            s.runs,
            when(Some(s.started_at)),
            when(s.last_commit_at),
            s.total_done,
            s.done,
            s.up_to_date,
            s.failed
        );
    }
    Ok(())
}
