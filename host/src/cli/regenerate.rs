//! `refacen regenerate`: findface-regenerate's job: new normalized faces, thumbnails and
//! facens from an Uploads folder, committed to the face store.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

use super::GuestArgs;
use super::stores::{FaceStoreArgs, SearchStoreArgs, StateLayout};
use crate::face::{ParamValue, parse_params};
use crate::imaging::DecodeLimits;
use crate::pipeline::{
    self, DerivedFiles, DetectorSetup, ModelSetup, Outputs, Plan, Progress, Share, Summary,
};
use crate::runtime::World;
use crate::store::{DetectorProvenance, ModelProvenance, SearchCopier};

#[derive(Args, Debug)]
pub struct RegenerateArgs {
    /// The Uploads directory holding the original photos.
    #[arg(long, value_name = "DIR")]
    pub uploads: PathBuf,

    /// What to regenerate: any of normalized, thumbs, facens, comma-separated. `facens` alone
    /// re-embeds the stored normalized faces with --model and reads no originals.
    #[arg(long, value_name = "LIST", default_value = "normalized,thumbs,facens")]
    pub regenerate: Outputs,

    /// Detector: a name from the guest directory or a path to a .wasm file.
    #[arg(long, value_name = "NAME|PATH", default_value = "nnd")]
    pub detector: String,

    /// Model (embedder): a name from the guest directory or a path to a .wasm file.
    #[arg(long, value_name = "NAME|PATH", default_value = "dlib-resnet-128")]
    pub model: String,

    /// Set a detector parameter (see `refacen guests`); repeatable.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,

    /// Regenerate only faces with ids from this one on (photos with such faces).
    #[arg(long, value_name = "ID")]
    pub min_id: Option<u64>,

    /// Regenerate only faces with ids up to this one (inclusive).
    #[arg(long, value_name = "ID")]
    pub max_id: Option<u64>,

    /// Take every N-th photo (every N-th face with `--regenerate facens`), so N hosts can
    /// split one Uploads; see --every-other-offset.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub every_other: u64,

    /// Which share this host takes with --every-other: 0..N-1.
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub every_other_offset: u64,

    /// Guest instances working in parallel: detectors, or models with `--regenerate facens`
    /// alone (default: the CPU count, at most 4 with the CPU backend, at most 32 with a GPU).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: Option<u16>,

    /// Faces per call into the model.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub batch_size: u16,

    /// With `--regenerate facens`: leave faces whose stored facen already has this size.
    #[arg(long, value_name = "N")]
    pub facen_size: Option<u32>,

    /// Scale photos larger than this (either side, pixels) down before detection.
    #[arg(long, value_name = "PIXELS", value_parser = clap::value_parser!(u32).range(16..))]
    pub max_size: Option<u32>,

    /// A re-detected face keeps a stored face's id when their boxes overlap at least this much (IoU).
    #[arg(long, value_name = "IOU", default_value_t = 0.5)]
    pub identity_iou: f32,

    /// Height of thumbnails, pixels.
    #[arg(long, value_name = "PIXELS", default_value_t = 160, value_parser = clap::value_parser!(u32).range(8..=4096))]
    pub thumb_height: u32,

    /// Where the embedded face store (without --mongo) and the derived files live (default:
    /// `<uploads>.refacen` beside Uploads). Never walked as originals, even inside Uploads.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Where normalized faces and thumbnails are written (default: `<state-dir>/files`).
    #[arg(long, value_name = "DIR")]
    pub files_dir: Option<PathBuf>,

    /// Report what would change; write nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// A TOML file with any of these options as keys (`uploads = "/srv/uploads"`,
    /// `param = ["min-face-size=40"]`, `dry-run = true`); options given here override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print the final summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub face_store: FaceStoreArgs,

    #[command(flatten)]
    pub search_store: SearchStoreArgs,

    #[command(flatten)]
    pub guest: GuestArgs,
}

pub fn run(args: &RegenerateArgs) -> anyhow::Result<ExitCode> {
    // `--regenerate facens` alone reads no originals; Uploads only locates the state.
    if args.regenerate.needs_detection() && !args.uploads.is_dir() {
        bail!("--uploads {}: not a directory", args.uploads.display());
    }
    if args.every_other_offset >= args.every_other {
        bail!(
            "--every-other-offset {} must be below --every-other {}",
            args.every_other_offset,
            args.every_other
        );
    }
    if !(0.0..=1.0).contains(&args.identity_iou) || args.identity_iou == 0.0 {
        bail!("--identity-iou {} must lie in (0, 1]", args.identity_iou);
    }
    let ids = match (args.min_id, args.max_id) {
        (None, None) => None,
        (min, max) => {
            let (min, max) = (min.unwrap_or(1), max.unwrap_or(u64::MAX));
            if min > max {
                bail!("--min-id {min} is above --max-id {max}");
            }
            Some(min..=max)
        }
    };
    let runtime = Arc::new(args.guest.runtime()?);
    let guest_dir = args.guest.guest_dir();
    let outputs = args.regenerate;

    let detector = if outputs.needs_detection() {
        let component = runtime.resolve(&args.detector, World::Detector, &guest_dir)?;
        let probe = runtime.detector(component.clone())?;
        let info = probe.info();
        let params = parse_params(&info.params, &args.params, &info.name).map_err(anyhow::Error::msg)?;
        let mut effective: BTreeMap<String, ParamValue> =
            info.params.iter().map(|p| (p.name.clone(), p.default.clone())).collect();
        effective.extend(params.iter().cloned());
        let provenance = DetectorProvenance {
            name: info.name.clone(),
            version: info.version.clone(),
            sha256: component.sha256.clone(),
            params: effective,
        };
        Some(DetectorSetup { component, params, provenance })
    } else {
        if !args.params.is_empty() {
            bail!(
                "--param sets detector parameters, but --regenerate {} runs no detector",
                outputs_text(outputs)
            );
        }
        None
    };
    let model = if outputs.facens {
        let component = runtime.resolve(&args.model, World::Embedder, &guest_dir)?;
        let probe = runtime.embedder(component.clone())?;
        let info = probe.info();
        Some(ModelSetup {
            provenance: ModelProvenance {
                name: info.name.clone(),
                version: info.version.clone(),
                sha256: component.sha256.clone(),
                facen_size: info.facen_size,
            },
            template: info.template.clone(),
            component,
        })
    } else {
        None
    };

    let layout = StateLayout::new(&args.uploads, args.state_dir.as_deref(), args.files_dir.as_deref());
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    // Both stores answer before any work starts.
    let (store, search) = tokio.block_on(async {
        let store = args.face_store.open(&layout, false).await?;
        let search = args.search_store.open(&args.face_store.retry).await?;
        anyhow::Ok((store, search))
    })?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // The CPU backend spreads each graph over every core, so a few photos at once keep them
    // busy; with a GPU the cores only decode and pre/post-process, one photo each.
    let workers = args.concurrency.map(usize::from).unwrap_or(if runtime.nn_offloads() {
        cores.min(32)
    } else {
        cores.min(4)
    });
    let plan = Plan {
        uploads: args.uploads.clone(),
        skip_dirs: vec![layout.state_dir.clone(), layout.files_dir.clone()],
        derived: Arc::new(DerivedFiles::new(layout.files_dir.clone())),
        outputs,
        detector,
        model,
        ids,
        share: Share { every: args.every_other, offset: args.every_other_offset },
        workers,
        batch_size: usize::from(args.batch_size),
        skip_facen_size: args.facen_size,
        max_size: args.max_size,
        identity_iou: args.identity_iou,
        thumb_height: args.thumb_height,
        thumb_margin: 0.5,
        decode_limits: DecodeLimits::default(),
        dry_run: args.dry_run,
        stop: stop_on_ctrl_c(&tokio),
    };
    eprintln!(
        "regenerate {} from {} into {}{} ({} worker(s), {} backend){}",
        outputs_text(outputs),
        args.uploads.display(),
        store.location(),
        search.as_ref().map_or(String::new(), |s| format!(", facens copied to {}", s.location())),
        workers,
        runtime.nn_backend(),
        if args.dry_run { ", dry run: nothing is written" } else { "" }
    );
    let progress: Arc<dyn Progress> = if std::io::stderr().is_terminal() {
        Arc::new(TerminalProgress::new())
    } else {
        Arc::new(LogProgress::new(Duration::from_secs(10)))
    };
    let search = search.map(|s| Arc::new(SearchCopier::new(s)));
    let (summary, result) =
        tokio.block_on(pipeline::run(plan, runtime.clone(), store, search, progress.clone()));
    drop(progress);
    // A closed stdout ends the command quietly, unless the run failed, which matters more.
    let printed = print_summary(&summary, args.json);
    if let Err(e) = result {
        bail!(
            "{e}\nregenerate stopped; what it committed before stays: fix the cause, then run the same command again to finish"
        );
    }
    if summary.interrupted {
        eprintln!(
            "regenerate: interrupted; what was in flight is committed: run the same command again to resume"
        );
        return Ok(ExitCode::from(130));
    }
    printed?;
    Ok(if summary.failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// A flag the first Ctrl-C sets: the run takes no new photos, commits those in flight and
/// ends. A second Ctrl-C ends the process at once, which loses nothing either (a rerun
/// resumes), only the photos in flight.
fn stop_on_ctrl_c(tokio: &tokio::runtime::Runtime) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    tokio.spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        flag.store(true, Ordering::Relaxed);
        eprintln!("\nregenerate: stopping after the photos in flight (Ctrl-C again to stop at once)");
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("regenerate: stopped; run the same command again to resume");
            std::process::exit(130);
        }
    });
    stop
}

fn outputs_text(o: Outputs) -> String {
    let mut parts = Vec::new();
    for (on, name) in [(o.normalized, "normalized"), (o.thumbs, "thumbs"), (o.facens, "facens")] {
        if on {
            parts.push(name);
        }
    }
    parts.join(",")
}

fn print_summary(summary: &Summary, json: bool) -> anyhow::Result<()> {
    for message in &summary.failure_examples {
        eprintln!("error: {message}");
    }
    if summary.failed as usize > summary.failure_examples.len() {
        eprintln!("... and {} more failures", summary.failed as usize - summary.failure_examples.len());
    }
    eprintln!("{summary}");
    if json {
        crate::outln!("{}", serde_json::to_string(summary)?);
    }
    Ok(())
}

/// A spinner with live counts, on a terminal.
struct TerminalProgress {
    bar: indicatif::ProgressBar,
}

impl TerminalProgress {
    fn new() -> Self {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(200));
        TerminalProgress { bar }
    }
}

impl Progress for TerminalProgress {
    fn update(&self, s: &Summary) {
        self.bar.set_message(format!(
            "{} {} done, {} up to date, {} failed; faces {} new, {} kept, {} lost; {} facens",
            s.unit, s.done, s.up_to_date, s.failed, s.faces_new, s.faces_kept, s.faces_lost, s.facens
        ));
    }
}

impl Drop for TerminalProgress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// A log line every `interval`, when stderr is not a terminal.
struct LogProgress {
    interval: Duration,
    last: Mutex<Instant>,
    started: Instant,
}

impl LogProgress {
    fn new(interval: Duration) -> Self {
        LogProgress { interval, last: Mutex::new(Instant::now()), started: Instant::now() }
    }
}

impl Progress for LogProgress {
    fn update(&self, s: &Summary) {
        let mut last = self.last.lock().unwrap();
        if last.elapsed() >= self.interval {
            *last = Instant::now();
            eprintln!(
                "[{:>6.0} s] {} {} done, {} up to date, {} failed; {} facens",
                self.started.elapsed().as_secs_f64(),
                s.unit,
                s.done,
                s.up_to_date,
                s.failed,
                s.facens
            );
        }
    }
}
