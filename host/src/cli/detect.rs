//! `refacen detect`: faces in photos, printed per photo.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use anyhow::Context;
use clap::Args;

use super::GuestArgs;
use crate::face::{Face, ParamValue, parse_params};
use crate::imaging::{DecodeLimits, decode_rgb};
use crate::runtime::{Detector, World};

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

    /// Print JSON: one object per photo and line, `{"image", "faces": [{"bbox", "score", "landmarks"}]}`.
    #[arg(long)]
    pub json: bool,

    /// Photos processed at once, each by its own detector instance (default: from `--threads`).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: Option<u16>,

    #[command(flatten)]
    pub guest: GuestArgs,
}

enum Outcome {
    Faces(Vec<Face>),
    Failed { cause: &'static str, message: String },
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
    std::thread::scope(|scope| {
        for mut detector in detectors {
            let sender = sender.clone();
            let (next, images, params) = (&next, &args.images, &params);
            scope.spawn(move || {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = images.get(index) else { break };
                    let outcome = detect_one(&mut detector, path, params);
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
                    Outcome::Faces(faces) => faces_total += faces.len(),
                    Outcome::Failed { cause, .. } => *failures.entry(cause).or_default() += 1,
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
        "detect: {n} photo(s), {} ok, {failed} failed{}; {faces_total} face(s); {elapsed:.2} s ({:.1} photos/s)",
        n - failed,
        if causes.is_empty() { String::new() } else { format!(" ({})", causes.join(", ")) },
        n as f64 / elapsed.max(1e-9),
    );
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn detect_one(detector: &mut Detector, path: &Path, params: &[(String, ParamValue)]) -> Outcome {
    let image = match decode_rgb(path, &DecodeLimits::default()) {
        Ok(image) => image,
        Err(e) => return Outcome::Failed { cause: e.kind(), message: e.to_string() },
    };
    match detector.detect(&image, params) {
        Ok(faces) => Outcome::Faces(faces),
        Err(e) => Outcome::Failed { cause: e.failure.kind(), message: format!("{}: {e}", path.display()) },
    }
}

fn print_outcome(path: &Path, outcome: &Outcome, json: bool) {
    match (outcome, json) {
        (Outcome::Faces(faces), true) => {
            println!("{}", serde_json::json!({ "image": path, "faces": faces }));
        }
        (Outcome::Failed { cause, message }, true) => {
            println!("{}", serde_json::json!({ "image": path, "error": message, "cause": cause }));
        }
        (Outcome::Faces(faces), false) => {
            println!("{}: {} face(s)", path.display(), faces.len());
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
            println!("{}: FAILED", path.display());
            eprintln!("error: {message}");
        }
    }
}
