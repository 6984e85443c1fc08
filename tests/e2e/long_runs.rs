//! Long runs: what the host holds for a guest returns to its baseline after every photo,
//! memory stays flat over hundreds of photos, and a scheduler's SIGTERM ends a run the way
//! Ctrl-C does.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use refacen::imaging::decode_rgb;
use refacen::nn::Backend;
use refacen::nn::cpu::CpuBackend;
use refacen::runtime::{CodeCache, GuestLimits, GuestRuntime, NnHost, NnLimits, NnUsage};
use serde_json::Value;

use crate::regenerate::{Uploads, content, count};
use crate::support::{guest, photos, refacen_command, repo};
use crate::{soak, synthetic};

fn runtime() -> GuestRuntime {
    let backend: Arc<dyn Backend> = Arc::new(CpuBackend::default());
    let nn = Arc::new(NnHost::new(backend, NnLimits::default()));
    GuestRuntime::new(nn, GuestLimits::default(), CodeCache::new(Some(repo().join("target/test-cache"))))
        .unwrap()
}

fn sample_photos() -> Vec<image::RgbImage> {
    let mut paths: Vec<_> = std::fs::read_dir(photos()).unwrap().map(|e| e.unwrap().path()).collect();
    paths.sort();
    paths.iter().map(|p| decode_rgb(p, &Default::default()).unwrap()).collect()
}

/// Regression: `compute` read the tensors a guest handed over and never released them, so a
/// detector kept ~8 MB per 1 MP photo alive in the host until it trapped at the 2 GiB limit.
#[test]
fn wasi_nn_resources_return_to_baseline_after_every_photo() {
    let runtime = runtime();
    let photos = sample_photos();
    for name in ["nnd", "dlib"] {
        let mut detector = runtime.detector(runtime.load(&guest(name)).unwrap()).unwrap();
        let calls = if name == "nnd" { 30 } else { 6 };
        let mut baseline: Option<NnUsage> = None;
        for call in 0..calls {
            let faces = detector.detect(&photos[call % photos.len()], &[]).unwrap();
            let usage = detector.nn_usage().expect("a live instance after a good call");
            assert_eq!(
                (usage.tensors, usage.tensor_bytes, usage.errors),
                (0, 0, 0),
                "{name}, call {call} ({} faces): tensors or errors left in the host: {usage:?}",
                faces.len()
            );
            // Graphs and contexts a guest keeps between calls are its working set: they must
            // not grow either.
            assert_eq!(*baseline.get_or_insert(usage), usage, "{name}, call {call}");
        }
    }
    let mut embedder = runtime.embedder(runtime.load(&guest("dlib-resnet-128")).unwrap()).unwrap();
    let chip = image::imageops::resize(&photos[0], 150, 150, image::imageops::FilterType::Triangle);
    let mut baseline: Option<NnUsage> = None;
    for call in 0..10 {
        let batch = vec![chip.clone(); 1 + call % 4];
        embedder.embed(&batch).unwrap();
        let usage = embedder.nn_usage().unwrap();
        assert_eq!(
            (usage.tensors, usage.tensor_bytes, usage.errors),
            (0, 0, 0),
            "embed call {call}: {usage:?}"
        );
        assert_eq!(*baseline.get_or_insert(usage), usage, "embed call {call}");
    }
}

/// Hundreds of photos through one worker: resident memory reaches its plateau in the first
/// half of the run and stays there, and no photo fails. (`scripts/bench-soak` runs thousands
/// of 1 MP photos and prints the curve.)
#[test]
fn a_long_run_stays_flat_in_memory() {
    let root = tempfile::tempdir().unwrap();
    let uploads = root.path().join("uploads");
    let samples: Vec<_> = sample_photos();
    let photos = 240;
    synthetic::write_uploads(&samples, &uploads, photos, 0.3);
    let mut command = refacen_command(&[
        "regenerate".to_string(),
        "--json".into(),
        "--uploads".into(),
        uploads.display().to_string(),
        "--state-dir".into(),
        root.path().join("state").display().to_string(),
        "--concurrency".into(),
        "1".into(),
    ]);
    command.env("REFACEN_THREADS", "2");
    let run = soak::run_sampled(command, Duration::from_millis(200));
    assert_eq!(run.code, 0, "{}", run.stderr);
    let summary: Value = serde_json::from_str(run.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(count(&summary, "done") as usize, photos, "{summary}");
    assert_eq!(count(&summary, "failed"), 0, "{summary}");
    let (first, second) = run.half_peaks_mib();
    println!(
        "soak: {} photos in {:.1} s, peak RSS {first:.0} MiB in the first half, {second:.0} MiB in the second; \
         slope over the second half {:.1} MiB/min\n{}",
        photos,
        run.elapsed.as_secs_f64(),
        run.second_half_slope_mib_per_min(),
        run.curve(10)
    );
    // The leak this guards against grew ~2.5 MB per photo of this size: 300 MB over the second
    // half. Allocator noise is a few tens of MB.
    assert!(
        second <= first * 1.10 + 48.0,
        "memory grows: peak {first:.0} MiB in the first half, {second:.0} MiB in the second\n{}",
        run.curve(5)
    );
}

/// Kubernetes, systemd and Slurm stop a job with SIGTERM (then SIGKILL after a grace
/// period): the run takes no new photos, commits those in flight, prints its summary and
/// exits with 143; the rerun finishes the job as if nothing had happened.
#[test]
fn sigterm_commits_the_photos_in_flight_and_exits_143() {
    let clean = Uploads::with_copies(8);
    let started = Instant::now();
    let out = refacen_command(&clean.args(&[])).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let clean_time = started.elapsed();

    let stopped = Uploads::with_copies(8);
    let mut child = refacen_command(&stopped.args(&[])).spawn().unwrap();
    // Once the first photo is committed the run is in full swing.
    let deadline = Instant::now() + clean_time;
    while !has_files(&stopped.files()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be stopped");
    // SAFETY: kill(2) on our own child, which has not been waited for.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(143), "{stderr}");
    assert!(stderr.contains("SIGTERM"), "{stderr}");
    assert!(stderr.contains("run the same command again to resume"), "{stderr}");
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["interrupted"], true, "{summary}");
    let done = count(&summary, "done");
    assert!(done > 0 && done < 48, "{summary}");
    // Every photo the summary counts is in the store (those with faces show in `faces`).
    let photos_of = |faces: std::collections::BTreeMap<u64, Value>| {
        faces
            .values()
            .map(|f| f["photo"].as_str().unwrap().to_string())
            .collect::<std::collections::BTreeSet<_>>()
    };
    let (stored, faceless) =
        (photos_of(stopped.faces()).len() as u64, 48 - photos_of(clean.faces()).len() as u64);
    assert!(stored <= done && done <= stored + faceless, "{stored} photos stored; {summary}");

    let (out, summary) = stopped.regenerate(&[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(count(&summary, "done") + count(&summary, "up_to_date"), 48, "{summary}");
    assert_eq!(count(&summary, "up_to_date"), done, "{summary}");
    assert_eq!(content(&stopped.faces()), content(&clean.faces()));
}

fn has_files(dir: &Path) -> bool {
    walkdir::WalkDir::new(dir).into_iter().filter_map(Result::ok).any(|e| e.file_type().is_file())
}
