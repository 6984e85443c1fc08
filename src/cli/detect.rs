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
use refacen_face::{ParamValue, parse_params};
use refacen_imaging::{DecodeCause, DecodeLimits, decode_photo};
use refacen_pipeline::{FailureCause, FitError, Fitted, detect_fitting};
use refacen_runtime::{Detector, World};
use refacen_store::PhotoName;

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
        cause: FailureCause,
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
    let mut detectors = vec![first];
    for _ in 1..jobs {
        detectors.push(runtime.detector(component.clone()).context("starting another detector instance")?);
    }

    let mut failures: BTreeMap<FailureCause, usize> = BTreeMap::new();
    let mut faces_total = 0;
    let mut skipped = 0;
    detect_all(
        &args.images,
        detectors,
        |detector, path| detect_one(detector, path, &params, args.max_size),
        |path, outcome| {
            match &outcome {
                Outcome::Faces { fitted, .. } => faces_total += fitted.faces.len(),
                Outcome::Failed { cause, .. } => *failures.entry(*cause).or_default() += 1,
                Outcome::Skipped { .. } => skipped += 1,
            }
            print_outcome(path, &outcome, args.json)
        },
    )?;

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
        Err(e) => return Outcome::Failed { cause: e.cause().into(), message: e.to_string() },
    };
    match detect_fitting(detector, &photo.image, params, max_size) {
        Ok(fitted) => Outcome::Faces { fitted, orientation: photo.orientation },
        Err(FitError::Guest(e)) => {
            Outcome::Failed { cause: e.failure.kind().into(), message: format!("{name}: {e}") }
        }
        Err(e @ FitError::TooLarge { .. }) => {
            Outcome::Failed { cause: DecodeCause::TooLarge.into(), message: format!("{name}: {e}") }
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

/// Runs `detect` on every image, one worker thread per detector, and hands each outcome to
/// `report` in input order as it arrives. A panic while a photo is detected (a bug in
/// refacen) fails that photo alone, naming it and the panic: the worker goes on with the next
/// photo on a fresh guest instance (a session drops its instance when a call unwinds). An
/// error from `report` (stdout closed) stops the workers after their photos in flight.
fn detect_all<D: Send>(
    images: &[PathBuf],
    detectors: Vec<D>,
    detect: impl Fn(&mut D, &Path) -> Outcome + Sync,
    mut report: impl FnMut(&Path, Outcome) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let next = AtomicUsize::new(0);
    let (sender, receiver) = mpsc::channel::<(usize, Outcome)>();
    std::thread::scope(|scope| {
        for mut detector in detectors {
            let sender = sender.clone();
            let (next, detect) = (&next, &detect);
            scope.spawn(move || {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = images.get(index) else { break };
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        detect(&mut detector, path)
                    }))
                    .unwrap_or_else(|payload| Outcome::Failed {
                        cause: FailureCause::RefacenBug,
                        message: format!(
                            "{}: refacen itself failed on this photo ({}); the other photos go on. \
                                     Please report this, with the photo if you can",
                            shown(path),
                            panic_text(payload.as_ref())
                        ),
                    });
                    if sender.send((index, outcome)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(sender);
        let mut pending = BTreeMap::new();
        let mut reported = 0;
        for (index, outcome) in receiver {
            pending.insert(index, outcome);
            while let Some(outcome) = pending.remove(&reported) {
                report(&images[reported], outcome)?;
                reported += 1;
            }
        }
        Ok(())
    })
}

/// A panic's message (`panic!` gives a `&str` or a `String`).
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into());
    format!("panic: {text}")
}

fn print_outcome(path: &Path, outcome: &Outcome, json: bool) -> anyhow::Result<()> {
    let name = shown(path);
    // Plain lines are for terminals: no control character from a file name reaches them.
    let plain = refacen_store::escape_controls(&name);
    match (outcome, json) {
        (Outcome::Faces { fitted, orientation }, true) => {
            let mut line =
                serde_json::json!({ "image": name, "orientation": orientation, "faces": fitted.faces });
            if let Some((w, h)) = fitted.scaled_to {
                line["scaled_to"] = serde_json::json!([w, h]);
            }
            crate::outln!("{line}");
        }
        (Outcome::Failed { cause, message }, true) => {
            crate::outln!("{}", serde_json::json!({ "image": name, "error": message, "cause": cause }));
        }
        (Outcome::Skipped { message }, true) => {
            crate::outln!(
                "{}",
                serde_json::json!({ "image": name, "skipped": DecodeCause::NotAnImage.as_str(), "reason": message })
            );
        }
        (Outcome::Skipped { message }, false) => {
            crate::outln!("{plain}: skipped");
            eprintln!("skipped: {}", refacen_store::escape_controls(message));
        }
        (Outcome::Faces { fitted, .. }, false) => {
            let faces = &fitted.faces;
            let scaled = fitted
                .scaled_to
                .map_or(String::new(), |(w, h)| format!(" (detected scaled down to {w}x{h})"));
            crate::outln!("{plain}: {} face(s){scaled}", faces.len());
            for (i, f) in faces.iter().enumerate() {
                let [x1, y1, x2, y2] = f.bbox;
                let points: Vec<String> =
                    f.landmarks.iter().map(|[x, y]| format!("({x:.1}, {y:.1})")).collect();
                crate::outln!(
                    "  face {i}: box [{x1:.1}, {y1:.1}, {x2:.1}, {y2:.1}] score {:.4} landmarks {}",
                    f.score,
                    points.join(" ")
                );
            }
        }
        (Outcome::Failed { message, .. }, false) => {
            crate::outln!("{plain}: FAILED");
            eprintln!("error: {}", refacen_store::escape_controls(message));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a worker that panicked took `detect` down with `a scoped thread panicked`,
    /// naming no photo and losing the results of the others.
    #[test]
    fn a_panic_on_one_photo_fails_that_photo_alone_and_names_it() {
        let images: Vec<PathBuf> = (0..40).map(|i| PathBuf::from(format!("photos/{i:02}.jpg"))).collect();
        // More workers than this machine has cores, each one a "detector" counting its photos.
        let detectors = vec![0usize; 6];
        let mut reported = Vec::new();
        detect_all(
            &images,
            detectors,
            |photos_done, path| {
                *photos_done += 1;
                if path.ends_with("13.jpg") || path.ends_with("27.jpg") {
                    panic!("already borrowed: BorrowMutError");
                }
                Outcome::Skipped { message: "a stand-in for a detected photo".into() }
            },
            |path, outcome| {
                reported.push((path.to_path_buf(), outcome));
                Ok(())
            },
        )
        .expect("every photo reported");

        let order: Vec<&PathBuf> = reported.iter().map(|(p, _)| p).collect();
        assert_eq!(order, images.iter().collect::<Vec<_>>(), "every photo, in input order");
        for (path, outcome) in &reported {
            let panicked = path.ends_with("13.jpg") || path.ends_with("27.jpg");
            match outcome {
                Outcome::Failed { cause, message } => {
                    assert!(panicked, "{} failed: {message}", path.display());
                    assert_eq!(*cause, FailureCause::RefacenBug);
                    assert!(message.starts_with(&path.display().to_string()), "{message}");
                    assert!(message.contains("already borrowed: BorrowMutError"), "{message}");
                }
                Outcome::Faces { .. } | Outcome::Skipped { .. } => {
                    assert!(!panicked, "{} did not fail", path.display())
                }
            }
        }
    }

    #[test]
    fn a_reader_that_goes_away_stops_the_workers() {
        let images: Vec<PathBuf> = (0..1000).map(|i| PathBuf::from(format!("{i}.jpg"))).collect();
        let detected = AtomicUsize::new(0);
        let mut reported = 0;
        let result = detect_all(
            &images,
            vec![(); 4],
            |_, _| {
                detected.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(5));
                Outcome::Skipped { message: String::new() }
            },
            |_, _| {
                reported += 1;
                if reported == 3 { Err(crate::cli::output::StdoutClosed.into()) } else { Ok(()) }
            },
        );
        assert!(crate::cli::output::is_stdout_closed(&result.unwrap_err()));
        let detected = detected.load(Ordering::Relaxed);
        assert!(detected < images.len(), "all {detected} photos detected though nobody read after the third");
    }
}
