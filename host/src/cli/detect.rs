//! `refacen detect`: faces in photos, printed per photo.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use anyhow::Context;
use clap::Args;

use super::GuestArgs;
use crate::face::{ParamValue, parse_params};
use crate::imaging::{DecodeCause, DecodeLimits, decode_photo};
use crate::pipeline::{FitError, Fitted, detect_fitting};
use crate::runtime::{Detector, World};
use crate::store::PhotoName;

#[derive(Args, Debug)]
pub struct DetectArgs {
    /// Photos to detect faces in.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,

    /// Detector: the name a guest in the guest directory declares, or a path to a .wasm file.
    #[arg(long, default_value = "nnd", value_name = "NAME|PATH")]
    pub detector: String,

    /// Set a detector parameter (see `refacen guests`); repeatable.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,

    /// Print JSON: one object per photo and line, `{"image", "orientation", "faces": [{"bbox",
    /// "score", "landmarks"}]}` (and `"scaled_to": [w, h]` when it was detected scaled down);
    /// `{"image", "error", "cause"}` for a failure, `{"image", "skipped", "reason"}` for a file
    /// that is not an image.
    #[arg(long)]
    pub json: bool,

    /// Scale photos larger than this (either side, pixels) down before detection; boxes are
    /// given in the full-size photo. Without it, only a photo too large for the detector's
    /// memory or data limits is scaled down, halving until it fits.
    #[arg(long, value_name = "PIXELS", value_parser = clap::value_parser!(u32).range(16..))]
    pub max_size: Option<u32>,

    /// Photos processed at once, each by its own detector instance (default: from `--threads`).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: Option<u16>,

    #[command(flatten)]
    pub guest: GuestArgs,
}

enum Outcome {
    Faces {
        fitted: Fitted,
        orientation: u8,
    },
    Failed {
        cause: &'static str,
        message: String,
    },
    /// Not an image (a video, a sidecar, folder metadata): neither detected nor failed.
    Skipped {
        message: String,
    },
}

pub fn run(args: &DetectArgs) -> anyhow::Result<ExitCode> {
    let runtime = args.guest.runtime()?;
    let component = runtime.resolve(&args.detector, World::Detector, &args.guest.guest_dir())?;
    let first = runtime.detector(component.clone())?;
    let params =
        parse_params(&first.info().params, &args.params, &first.info().name).map_err(anyhow::Error::msg)?;
    let jobs = args
        .jobs
        .map(usize::from)
        .unwrap_or_else(|| super::default_concurrency(&runtime))
        .min(args.images.len());
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let (sender, receiver) = mpsc::channel::<(usize, Outcome)>();
    let mut detectors = vec![first];
    for _ in 1..jobs {
        detectors.push(runtime.detector(component.clone()).context("starting another detector instance")?);
    }

    let mut failures: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut faces_total = 0;
    let mut skipped = 0;
    std::thread::scope(|scope| {
        for mut detector in detectors {
            let sender = sender.clone();
            let (next, images, params, max_size) = (&next, &args.images, &params, args.max_size);
            scope.spawn(move || {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = images.get(index) else { break };
                    let outcome = detect_one(&mut detector, path, params, max_size);
                    if sender.send((index, outcome)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(sender);
        // Print in input order as results arrive.
        let mut pending = BTreeMap::new();
        let mut printed = 0;
        for (index, outcome) in receiver {
            pending.insert(index, outcome);
            while let Some(outcome) = pending.remove(&printed) {
                let path = &args.images[printed];
                match &outcome {
                    Outcome::Faces { fitted, .. } => faces_total += fitted.faces.len(),
                    Outcome::Failed { cause, .. } => *failures.entry(cause).or_default() += 1,
                    Outcome::Skipped { .. } => skipped += 1,
                }
                print_outcome(path, &outcome, args.json);
                printed += 1;
            }
        }
    });

    let elapsed = started.elapsed().as_secs_f64();
    let failed: usize = failures.values().sum();
    let n = args.images.len();
    let causes: Vec<String> = failures.iter().map(|(c, k)| format!("{k} {c}")).collect();
    eprintln!(
        "detect: {n} photo(s), {} ok, {failed} failed{}{}; {faces_total} face(s); {elapsed:.2} s ({:.1} photos/s)",
        n - failed - skipped,
        if causes.is_empty() { String::new() } else { format!(" ({})", causes.join(", ")) },
        if skipped == 0 { String::new() } else { format!(", skipped: {skipped} not an image") },
        n as f64 / elapsed.max(1e-9),
    );
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn detect_one(
    detector: &mut Detector,
    path: &Path,
    params: &[(String, ParamValue)],
    max_size: Option<u32>,
) -> Outcome {
    let name = shown(path);
    let photo = match decode_photo(path, &DecodeLimits::default()) {
        Ok(photo) => photo,
        Err(e) if e.is_skip() => return Outcome::Skipped { message: e.to_string() },
        Err(e) => return Outcome::Failed { cause: e.kind(), message: e.to_string() },
    };
    match detect_fitting(detector, &photo.image, params, max_size) {
        Ok(fitted) => Outcome::Faces { fitted, orientation: photo.orientation },
        Err(FitError::Guest(e)) => {
            Outcome::Failed { cause: e.failure.kind(), message: format!("{name}: {e}") }
        }
        Err(e @ FitError::TooLarge { .. }) => {
            Outcome::Failed { cause: DecodeCause::TooLarge.as_str(), message: format!("{name}: {e}") }
        }
    }
}

/// A path as messages and output show it: as given when it is UTF-8 (JSON escapes what it
/// must), with bytes that are not UTF-8 as `\xNN`.
fn shown(path: &Path) -> Cow<'_, str> {
    match path.to_str() {
        Some(text) => Cow::Borrowed(text),
        None => Cow::Owned(PhotoName::from_bytes(path.as_os_str().as_bytes()).display),
    }
}

fn print_outcome(path: &Path, outcome: &Outcome, json: bool) {
    let name = shown(path);
    // Plain lines are for terminals: no control character from a file name reaches them.
    let plain = crate::store::escape_controls(&name);
    match (outcome, json) {
        (Outcome::Faces { fitted, orientation }, true) => {
            let mut line =
                serde_json::json!({ "image": name, "orientation": orientation, "faces": fitted.faces });
            if let Some((w, h)) = fitted.scaled_to {
                line["scaled_to"] = serde_json::json!([w, h]);
            }
            println!("{line}");
        }
        (Outcome::Failed { cause, message }, true) => {
            println!("{}", serde_json::json!({ "image": name, "error": message, "cause": cause }));
        }
        (Outcome::Skipped { message }, true) => {
            println!(
                "{}",
                serde_json::json!({ "image": name, "skipped": DecodeCause::NotAnImage.as_str(), "reason": message })
            );
        }
        (Outcome::Skipped { message }, false) => {
            println!("{plain}: skipped");
            eprintln!("skipped: {}", crate::store::escape_controls(message));
        }
        (Outcome::Faces { fitted, .. }, false) => {
            let faces = &fitted.faces;
            let scaled = fitted
                .scaled_to
                .map_or(String::new(), |(w, h)| format!(" (detected scaled down to {w}x{h})"));
            println!("{plain}: {} face(s){scaled}", faces.len());
            for (i, f) in faces.iter().enumerate() {
                let [x1, y1, x2, y2] = f.bbox;
                let points: Vec<String> =
                    f.landmarks.iter().map(|[x, y]| format!("({x:.1}, {y:.1})")).collect();
                println!(
                    "  face {i}: box [{x1:.1}, {y1:.1}, {x2:.1}, {y2:.1}] score {:.4} landmarks {}",
                    f.score,
                    points.join(" ")
                );
            }
        }
        (Outcome::Failed { message, .. }, false) => {
            println!("{plain}: FAILED");
            eprintln!("error: {}", crate::store::escape_controls(message));
        }
    }
}
