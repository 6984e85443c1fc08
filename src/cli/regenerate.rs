//! `refacen regenerate`: findface-regenerate's job: new normalized faces, thumbnails and
//! facens from an Uploads folder, committed to the face store.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

use super::GuestArgs;
use super::run_record::RunRecorder;
use super::stores::{FaceStoreArgs, SearchStoreArgs, StateDirArgs};
use refacen_face::{ParamValue, parse_params};
use refacen_imaging::DecodeLimits;
use refacen_pipeline as pipeline;
use refacen_pipeline::{
    DerivedFiles, DetectorSetup, Job, ModelSetup, Outputs, Plan, Progress, Redetect, Reembed, Summary,
};
use refacen_runtime::{GuestRuntime, World};
use refacen_store::{DetectorProvenance, ModelProvenance, SearchCopier, target_fingerprint};

/// What a migration produces: shared by `regenerate` and `status`.
#[derive(Args, Debug, Clone)]
pub struct TargetArgs {
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
}

#[derive(Args, Debug)]
pub struct RegenerateArgs {
    /// The Uploads directory holding the original photos.
    #[arg(long, value_name = "DIR")]
    pub uploads: PathBuf,

    #[command(flatten)]
    pub target: TargetArgs,

    /// Regenerate only faces with ids from this one on (photos with such faces).
    #[arg(long, value_name = "ID")]
    pub min_id: Option<u64>,

    /// Regenerate only faces with ids up to this one (inclusive).
    #[arg(long, value_name = "ID")]
    pub max_id: Option<u64>,

    #[command(flatten)]
    pub share: super::scale::ShareArgs,

    #[command(flatten)]
    pub scope: super::scale::ScopeArgs,

    /// Guest instances working in parallel: detectors, or models with `--regenerate facens`
    /// alone (default: half the `--threads` with the CPU backend, 2 to 16; the `--threads`,
    /// at most 32, with a GPU).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: Option<u16>,

    /// Faces per call into the model.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub batch_size: u16,

    /// With `--regenerate facens`: leave faces whose stored facen already has this size.
    #[arg(long, value_name = "N")]
    pub facen_size: Option<u32>,

    /// Scale photos larger than this (either side, pixels) down before detection; faces are
    /// still normalized from the full-size photo. Without it, only a photo too large for the
    /// detector's memory or data limits is scaled down, halving until it fits.
    #[arg(long, value_name = "PIXELS", value_parser = clap::value_parser!(u32).range(16..))]
    pub max_size: Option<u32>,

    /// Name each file skipped as not an image (videos, sidecars, `.DS_Store`, `Thumbs.db`...)
    /// on stderr; the summary counts them either way.
    #[arg(long)]
    pub list_skipped: bool,

    /// A re-detected face keeps a stored face's id when their boxes overlap at least this much (IoU).
    #[arg(long, value_name = "IOU", default_value_t = 0.5)]
    pub identity_iou: f32,

    /// Height of thumbnails, pixels.
    #[arg(long, value_name = "PIXELS", default_value_t = 160, value_parser = clap::value_parser!(u32).range(8..=4096))]
    pub thumb_height: u32,

    #[command(flatten)]
    pub state: StateDirArgs,

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
    if args.target.regenerate.needs_detection() && !args.uploads.is_dir() {
        bail!("--uploads {}: not a directory", args.uploads.display());
    }
    let chosen = args.share.resolve(|name| std::env::var(name).ok())?;
    if let Some(line) = &chosen.announcement {
        eprintln!("regenerate: {line}");
    }
    let layout = args.state.layout(&args.uploads);
    let scope = args.scope.scope(&args.uploads, &[layout.state_dir.clone(), layout.files_dir.clone()])?;
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
    let outputs = args.target.regenerate;

    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    // Before the guests load: scanning a guest directory compiles or loads every guest in it,
    // which takes seconds with large ones, and a Ctrl-C meanwhile must stop the run as any
    // other (status 130 and a summary), not kill it.
    let signals = StopSignals::install(&tokio)?;

    let job = job(&runtime, &guest_dir, &args.target, args.facen_size)?;

    // Both stores answer before any work starts.
    let (store, search) = tokio.block_on(async {
        let store = args.face_store.open(&layout, false).await?;
        let search = args.search_store.open(&args.face_store.retry).await?;
        anyhow::Ok((store, search))
    })?;
    let workers = args.concurrency.map(usize::from).unwrap_or_else(|| super::default_concurrency(&runtime));
    let target = target_fingerprint(
        job.detector().map(|d| &d.provenance),
        job.model().map(|m| &m.provenance),
        &outputs.listed(),
    );
    let plan = Plan {
        uploads: args.uploads.clone(),
        skip_dirs: vec![layout.state_dir.clone(), layout.files_dir.clone()],
        derived: Arc::new(DerivedFiles::new(layout.files_dir.clone())),
        ids,
        share: chosen.share,
        scope,
        workers,
        batch_size: usize::from(args.batch_size),
        max_size: args.max_size,
        list_skipped: args.list_skipped,
        identity_iou: args.identity_iou,
        thumb_height: args.thumb_height,
        thumb_margin: 0.5,
        decode_limits: DecodeLimits::default(),
        dry_run: args.dry_run,
        stop: signals.flag.clone(),
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
    let display: Arc<dyn Progress> = if std::io::stderr().is_terminal() {
        Arc::new(TerminalProgress::new())
    } else {
        Arc::new(LogProgress::new(Duration::from_secs(10)))
    };
    let recorder = RunRecorder::new(display);
    let record = match args.dry_run {
        true => None,
        false => Some(tokio.block_on(RunRecorder::start(store.as_ref(), &target, &plan.share))?),
    };
    let writer = record.clone().map(|base| {
        let _entered = tokio.enter();
        recorder.keep_writing(store.clone(), base)
    });
    let search = search.map(|s| Arc::new(SearchCopier::new(s)));
    let progress: Arc<dyn Progress> = recorder.clone();
    let (summary, result) =
        tokio.block_on(pipeline::run(job, plan, runtime.clone(), store.clone(), search, progress.clone()));
    drop(progress);
    if let Some(base) = record {
        writer.expect("a writer with every record").abort();
        let last = recorder.document(&base, result.is_ok() && !summary.interrupted);
        if let Err(e) = tokio.block_on(store.put_shard_progress(&last)) {
            eprintln!("regenerate: cannot record this shard's progress: {e}");
        }
    }
    drop(recorder);
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
        let signal = signals.received().unwrap_or(libc::SIGINT);
        return Ok(ExitCode::from((128 + signal) as u8));
    }
    printed?;
    Ok(if summary.failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// What a run with `target` does, and the guests that do it (whose provenance is also what
/// identifies the target in the stores' progress records).
pub(super) fn job(
    runtime: &GuestRuntime,
    guest_dir: &Path,
    target: &TargetArgs,
    skip_facen_size: Option<u32>,
) -> anyhow::Result<Job> {
    let outputs = target.regenerate;
    if outputs.needs_detection() {
        let detector = detector_setup(runtime, target, guest_dir)?;
        let model = if outputs.facens { Some(model_setup(runtime, target, guest_dir)?) } else { None };
        return Ok(Job::Redetect(Redetect { detector, outputs, model }));
    }
    if !target.params.is_empty() {
        bail!(
            "--param sets detector parameters, but --regenerate {} runs no detector",
            outputs_text(outputs)
        );
    }
    Ok(Job::Reembed(Reembed { model: model_setup(runtime, target, guest_dir)?, skip_facen_size }))
}

/// What stops a run early: the signals an operator (Ctrl-C: SIGINT) or a scheduler
/// (Kubernetes, systemd, Slurm: SIGTERM, then SIGKILL after a grace period) sends. The first
/// sets the plan's stop flag: the run takes no new photos, commits those in flight, prints its
/// summary and exits with 128 + the signal's number. A second one ends the process at once,
/// which loses nothing either (a rerun resumes), only the photos in flight.
struct StopSignals {
    flag: Arc<AtomicBool>,
    /// The number of the first signal received; 0 while none was.
    received: Arc<AtomicI32>,
}

impl StopSignals {
    fn install(tokio: &tokio::runtime::Runtime) -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        let flag = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicI32::new(0));
        let _guard = tokio.enter();
        let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
        let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        let (flag_set, received_set) = (flag.clone(), received.clone());
        tokio.spawn(async move {
            let first = tokio::select! {
                Some(()) = interrupt.recv() => libc::SIGINT,
                Some(()) = terminate.recv() => libc::SIGTERM,
                else => return,
            };
            received_set.store(first, Ordering::SeqCst);
            flag_set.store(true, Ordering::SeqCst);
            let again = if first == libc::SIGINT { "Ctrl-C again" } else { "a second SIGTERM" };
            eprintln!(
                "\nregenerate: {}: stopping after the photos in flight ({again} stops at once)",
                signal_name(first)
            );
            let second = tokio::select! {
                Some(()) = interrupt.recv() => libc::SIGINT,
                Some(()) = terminate.recv() => libc::SIGTERM,
                else => return,
            };
            eprintln!("regenerate: {}: stopped; run the same command again to resume", signal_name(second));
            std::process::exit(128 + second);
        });
        Ok(StopSignals { flag, received })
    }

    /// The signal that stopped the run, if one did.
    fn received(&self) -> Option<i32> {
        Some(self.received.load(Ordering::SeqCst)).filter(|&s| s != 0)
    }
}

fn signal_name(signal: i32) -> &'static str {
    if signal == libc::SIGTERM { "SIGTERM" } else { "SIGINT (Ctrl-C)" }
}

/// The detector of `--detector`, with its parameters checked against what it declares.
fn detector_setup(
    runtime: &GuestRuntime,
    args: &TargetArgs,
    guest_dir: &Path,
) -> anyhow::Result<DetectorSetup> {
    let component = runtime.resolve(&args.detector, World::Detector, guest_dir)?;
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
    Ok(DetectorSetup { component, params, provenance })
}

/// The model of `--model`.
fn model_setup(runtime: &GuestRuntime, args: &TargetArgs, guest_dir: &Path) -> anyhow::Result<ModelSetup> {
    let component = runtime.resolve(&args.model, World::Embedder, guest_dir)?;
    let probe = runtime.embedder(component.clone())?;
    let info = probe.info();
    Ok(ModelSetup {
        provenance: ModelProvenance {
            name: info.name.clone(),
            version: info.version.clone(),
            sha256: component.sha256.clone(),
            facen_size: info.facen_size,
        },
        template: info.template.clone(),
        component,
    })
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
